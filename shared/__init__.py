"""Pieces every process shares: the message contract, the bus, the recording, logging."""
