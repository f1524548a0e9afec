"""The live page (``analyzer --live --serve HOST:PORT``): power per GPU, host CPU, requests in flight,
each finished request's row as soon as its energy is known, totals per model, the batch's progress
and problems, in one self-contained page updated by server-sent events.

Threads: the live analyzer's receive loop feeds ``PageHub`` (on_message / on_row / on_batch /
on_tick) under a lock; an aiohttp server runs in a thread of its own with its own event loop, and
sends a tick to every viewer every ``TICK_S`` whether or not the analysis is busy. Each viewer has
a bounded queue: a viewer that falls behind loses updates (counted, shown on its page and in
``/state``) and is sent a fresh snapshot instead, so it never slows the analysis or the other
viewers, and what it shows is current again at once. A viewer that connects late gets the current
state, not the history.

The page has no authentication of its own: loopback by default, a non-loopback ``--serve`` needs
``--allow-remote`` and logs a warning (shared.listen); CURVE keys protect the bus, not this page.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

from analyzer import i18n
from analyzer.live_state import ROW_COLUMNS, LiveState
from shared import messages as M, timebase
from shared.logs import get_logger

log = get_logger("analyzer.live_page")

TICK_S = 0.4           # at least two updates a second
QUEUE_MAX = 256        # updates a viewer may lag before it is resynchronised with a snapshot
CSP_META = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'")
CSP = CSP_META + "; frame-ancestors 'none'"  # a header only: browsers ignore it in a <meta>


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Viewer:
    def __init__(self):
        self.queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0
        self.resync = False


class PageHub:
    """The page's state and its viewers. Feeding methods run in the receive loop's thread."""

    def __init__(self, state: LiveState | None = None, lang: str = "en"):
        self.state = state or LiveState()
        self.lang = lang
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.viewers: set[_Viewer] = set()
        self.dropped = 0          # updates dropped for slow viewers, all viewers together
        self._newest_at = 0.0     # timebase.now_s() when the newest wall clock arrived
        self.sent_rows = 0

    # -- fed by the analysis (receive thread) --------------------------------------------------
    def on_message(self, topic: str, payload: dict[str, Any], now_s: float) -> None:
        with self.lock:
            before = self.state.newest_wall_s
            self.state.on_message(topic, payload)
            if self.state.newest_wall_s > before:
                self._newest_at = timebase.now_s()

    def now_wall_s(self) -> float:
        """The bus's newest wall clock, moved on by the time since it arrived: the page's "now" keeps
        going when the bus is quiet, and stays on the publishers' clock (call under the lock)."""
        return self.state.newest_wall_s + (timebase.now_s() - self._newest_at if self._newest_at else 0.0)

    def on_row(self, row: M.AnaRow) -> None:
        with self.lock:
            out = self.state.on_row(row)
        self._broadcast("row", _json(out))

    def on_batch(self, analysis) -> None:
        """The batch's analysis: its Problems, worded as report.html words them (in the page's language)."""
        from analyzer.report import problem_list

        try:
            lines = problem_list(analysis, self.lang)
        except Exception:  # the report's wording must not cost the page its rows
            log.exception("live_page_problems_failed")
            lines = list(analysis.problems)
        with self.lock:
            self.state.on_batch(lines)

    def on_tick(self, now_s: float, in_flight: list[dict[str, Any]]) -> None:
        pass  # ticks come from the server's own loop (below), so they go on while an analysis runs

    # -- viewers (server thread) ---------------------------------------------------------------
    def _broadcast(self, event: str, data: str) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fanout, event, data)
            except RuntimeError:  # the loop is shutting down
                pass

    def _fanout(self, event: str, data: str) -> None:
        for v in list(self.viewers):
            if v.resync:
                v.dropped += 1
                self.dropped += 1
                continue
            try:
                v.queue.put_nowait((event, data))
            except asyncio.QueueFull:
                v.dropped += 1
                self.dropped += 1
                v.resync = True  # the handler sends a fresh snapshot once it catches up
                log.warning("live_page_viewer_behind", dropped=v.dropped)

    def snapshot(self) -> str:
        with self.lock:
            snap = self.state.snapshot(self.now_wall_s())
        return _json({**snap, "dropped": self.dropped})

    def status(self) -> dict[str, Any]:
        with self.lock:
            rows = len(self.state.rows)
        return {"viewers": len(self.viewers), "dropped": self.dropped, "rows": rows, "rows_seen": self.state.rows_seen}

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            with self.lock:
                tick = self.state.tick(self.now_wall_s())
            self._fanout("tick", _json(tick))

    # -- HTTP ----------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        lang = request.query.get("lang", self.lang)
        lang = lang if lang in i18n.LANGS else self.lang
        return web.Response(text=render_page(lang), content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    async def state_json(self, request: web.Request) -> web.Response:
        return web.Response(text=_json({**json.loads(self.snapshot()), "status": self.status()}),
                            content_type="application/json", headers={"Cache-Control": "no-store"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        viewer = _Viewer()
        self.viewers.add(viewer)  # first registered, then the snapshot: nothing falls in between
        try:
            await _send(resp, "snapshot", self.snapshot())
            while True:
                if viewer.resync:
                    while not viewer.queue.empty():
                        viewer.queue.get_nowait()
                    viewer.resync = False
                    await _send(resp, "snapshot", self.snapshot())
                    await _send(resp, "viewer", _json({"dropped": viewer.dropped}))
                    continue
                item = await viewer.queue.get()
                if item is None:
                    break
                await _send(resp, *item)
                if item[0] == "tick":
                    await _send(resp, "viewer", _json({"dropped": viewer.dropped}))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.viewers.discard(viewer)
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/events", self.events)
        app.router.add_get("/state", self.state_json)
        return app


async def _send(resp: web.StreamResponse, event: str, data: str) -> None:
    await resp.write(f"event: {event}\ndata: {data}\n\n".encode("utf-8"))


class PageServer:
    """Runs the hub's aiohttp app in a thread of its own; ``start`` returns once it listens."""

    def __init__(self, hub: PageHub, host: str, port: int):
        self.hub, self.host, self.port = hub, host, port
        self.url: str | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="live-page", daemon=True)

    def start(self, timeout_s: float = 10.0) -> str:
        self.thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the live page did not start listening in time")
        if self._error is not None:
            raise self._error
        return self.url or ""

    def stop(self) -> None:
        loop = self.hub.loop
        if loop is not None and self._stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException as exc:  # reported to start(); after start it is logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("live_page_stopped")
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        self.hub.loop = loop
        runner = web.AppRunner(self.hub.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        port = runner.addresses[0][1]  # the port the OS gave for port 0
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        self._ready.set()
        ticker = asyncio.create_task(self.hub.ticker())
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()
            for v in list(self.hub.viewers):
                try:
                    v.queue.put_nowait(None)
                except asyncio.QueueFull:
                    pass
            await runner.cleanup()


# -- the page ------------------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "title": {"en": "Live: power, requests and energy", "zh": "实时：功率、请求与能耗"},
    "power": {"en": "GPU power (W), up to the last {m} min", "zh": "GPU 功率（W），最多最近 {m} 分钟"},
    "cpu": {"en": "Host CPU (%)", "zh": "主机 CPU（%）"},
    "in_flight": {"en": "Requests in flight", "zh": "进行中的请求"},
    "finished": {"en": "Finished requests (newest first)", "zh": "已完成的请求（最新在前）"},
    "totals": {"en": "Totals per model", "zh": "各模型累计"},
    "batch": {"en": "Batch", "zh": "批次"},
    "problems": {"en": "Problems", "zh": "问题"},
    "none": {"en": "none", "zh": "无"},
    "simulated": {"en": "SIMULATED", "zh": "模拟"},
    "sim_banner": {"en": "SIMULATED GPU source: its power and energy are not measurements.",
                   "zh": "GPU 数据来自模拟源：其功率和能耗并非实测值。"},
    "progress": {"en": "{done} of {planned} done ({ok} ok, {failed} failed), {flying} in flight",
                 "zh": "已完成 {done} / {planned}（成功 {ok}，失败 {failed}），进行中 {flying}"},
    # a batch with no planned total (the measuring proxy counts requests as they come)
    "progress_open": {"en": "{done} done ({ok} ok, {failed} failed), {flying} in flight",
                      "zh": "已完成 {done}（成功 {ok}，失败 {failed}），进行中 {flying}"},
    "total_j": {"en": "energy J (GPU + CPU)", "zh": "总能耗 J（GPU + CPU）"},
    "ended": {"en": "ended", "zh": "已结束"}, "interrupted": {"en": "interrupted", "zh": "已中断"},
    "running": {"en": "running", "zh": "进行中"}, "waiting": {"en": "waiting for a batch", "zh": "等待批次"},
    "elapsed_s": {"en": "elapsed (s)", "zh": "已用时（s）"},
    "first_token_at": {"en": "first token after (s)", "zh": "首 token 用时（s）"},
    "tokens_so_far": {"en": "tokens so far", "zh": "已生成 token"},
    "early": {"en": "at its end", "zh": "结束时"}, "final": {"en": "final (batch)", "zh": "最终（批次）"},
    "row_state": {"en": "row", "zh": "行"}, "answer": {"en": "answer (start)", "zh": "回答（开头）"}, "reason": {"en": "no energy because", "zh": "无能耗原因"},
    "requests": {"en": "requests", "zh": "请求数"}, "tokens": {"en": "tokens", "zh": "token 数"},
    "connected": {"en": "live", "zh": "已连接"}, "disconnected": {"en": "reconnecting…", "zh": "正在重连…"},
    "dropped": {"en": "updates dropped for this viewer: {n}", "zh": "本页面丢弃的更新：{n}"},
    "unauth": {"en": "This page has no authentication of its own; it listens on loopback unless started with "
                     "--allow-remote.",
               "zh": "本页面自身没有身份验证；除非以 --allow-remote 启动，否则只监听本机回环地址。"},
    "no_data": {"en": "no data yet", "zh": "暂无数据"}, "now": {"en": "now", "zh": "现在"},
}


def words(lang: str) -> dict[str, str]:
    out = {k: v.get(lang) or v["en"] for k, v in WORDS.items()}
    for col in (*ROW_COLUMNS, "rid", "gpu_energy_j", "total_energy_j", "j_per_token"):
        out[f"col_{col}"] = i18n.label(col, lang)
    out["col_j_per_token"] = "J/token"
    out["col_output_tokens"] = "tokens" if lang == "en" else "输出 token"
    out["col_gpu_simulated"] = out["simulated"]
    out["col_total_energy_j"] = out["total_j"]  # next to "GPU J": say this one adds the CPU
    return out


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:16px 24px;
color:#222;max-width:1400px}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.1em;margin:18px 0 6px;border-bottom:1px solid #ddd}
.note{color:#555;font-size:12px}.sim{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px;font-weight:bold}
#conn{font-size:12px;padding:2px 8px;border-radius:8px;background:#ddd}#conn.on{background:#c9f0cf}
table.data{border-collapse:collapse;font-size:12px;margin:6px 0}
table.data th,table.data td{border:1px solid #ddd;padding:3px 6px;text-align:left;max-width:360px;overflow-wrap:break-word}
table.data td.num{text-align:right}table.data th{background:#f4f4f4}
.scroll{max-height:420px;overflow:auto}.grid2{display:flex;flex-wrap:wrap;gap:24px}
svg{background:#fff;display:block}.frame{fill:none;stroke:#999}.tick{font-size:10px;fill:#555}
.line{fill:none;stroke-width:1.5}.legend{font-size:12px}
tr.early td{color:#555;font-style:italic}ul.problems li{margin:3px 0}
"""

JS = r"""
(function(){
'use strict';
var W=JSON.parse(document.getElementById('words').textContent);
var NS='http://www.w3.org/2000/svg',COLORS=['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#17becf'];
var S={gpus:[],cpu:[],rows:[],in_flight:[],totals:[],batch:{},problems:[],window_s:300,now:0,simulated:false};
var rows={},order=[],viewerDropped=0;
window.__live={state:S,rows:rows,events:0,snapshots:0,ticks:0,errors:[]};
function $(id){return document.getElementById(id);}
function el(tag,cls,txt){var e=document.createElement(tag);if(cls)e.className=cls;if(txt!==undefined&&txt!==null)e.textContent=String(txt);return e;}
function svg(tag,attrs){var e=document.createElementNS(NS,tag);for(var k in attrs)e.setAttribute(k,String(attrs[k]));return e;}
function clear(e){while(e.firstChild)e.removeChild(e.firstChild);}
function fmt(t,o){return t.replace(/\{(\w+)\}/g,function(m,k){return (o[k]===undefined||o[k]===null)?'?':String(o[k]);});}
function mergeSeries(old,upd,full){
 var byKey={};old.forEach(function(s){byKey[s.key]=s;});
 return upd.map(function(s){var o=byKey[s.key];
  if(full||!o){return s;}
  var last=o.points.length?o.points[o.points.length-1][0]:-Infinity;
  s.points.forEach(function(p){if(p[0]>last)o.points.push(p);});
  o.last=s.last;o.simulated=s.simulated;o.label=s.label;o.name=s.name;return o;})
 .concat(old.filter(function(s){return !upd.some(function(u){return u.key===s.key;});}));
}
function prune(series,now,win){series.forEach(function(s){var i=0;while(i<s.points.length&&s.points[i][0]<now-win)i++;if(i)s.points.splice(0,i);});}
// a round tick step (1, 2, 2.5 or 5 times a power of ten) at least raw: ticks read 0 / 50 / 100 / 150
function niceStep(raw){if(!(raw>0))return 1;var p=Math.pow(10,Math.floor(Math.log10(raw))),f=raw/p;
 return (f<=1?1:f<=2?2:f<=2.5?2.5:f<=5?5:10)*p;}
function plot(id,series,unit,yfix){
 var box=$(id);clear(box);var w=Math.max(320,Math.min(900,box.clientWidth||640)),h=220,l=48,r=12,t=10,b=28;
 var s=svg('svg',{width:w,height:h,'class':'plot','data-series':series.length});box.appendChild(s);
 var now=S.now,oldest=now,ymax=yfix||1,ystep;
 series.forEach(function(x){if(x.points.length&&x.points[0][0]<oldest)oldest=x.points[0][0];});
 var win=Math.min(S.window_s,Math.max(60,now-oldest));  // a short run fills the figure; at most the window
 series.forEach(function(x){x.points.forEach(function(p){if(p[1]>ymax)ymax=p[1];});});
 if(yfix){ystep=ymax/4;}else{ystep=niceStep(ymax*1.05/4);ymax=ystep*Math.ceil(ymax*1.05/ystep);}
 function X(v){return l+(w-l-r)*(1-(now-v)/win);}function Y(v){return t+(h-t-b)*(1-v/ymax);}
 s.appendChild(svg('rect',{x:l,y:t,width:w-l-r,height:h-t-b,'class':'frame'}));
 for(var k=0;k*ystep<=ymax+ystep*1e-9;k++){var v=k*ystep,y=Y(v);var tx=svg('text',{x:l-4,y:y+3,'text-anchor':'end','class':'tick ytick'});
  tx.textContent=String(parseFloat(v.toPrecision(10)));s.appendChild(tx);}
 var tl=svg('text',{x:l,y:h-8,'class':'tick'});tl.textContent=win>=120?'-'+Math.round(win/60)+' min':'-'+Math.round(win)+' s';s.appendChild(tl);
 var tr=svg('text',{x:w-r,y:h-8,'text-anchor':'end','class':'tick'});tr.textContent=W.now+' ('+unit+')';s.appendChild(tr);
 series.forEach(function(x,i){if(x.points.length<1)return;
  var pts=x.points.map(function(p){return X(p[0]).toFixed(1)+','+Y(p[1]).toFixed(1);}).join(' ');
  s.appendChild(svg('polyline',{points:pts,'class':'line mark',stroke:COLORS[i%COLORS.length]}));});
 var leg=el('div','legend');series.forEach(function(x,i){var sp=el('span',null,'\u25A0 ');sp.style.color=COLORS[i%COLORS.length];
  leg.appendChild(sp);var name=x.label+(x.name?' ('+x.name+')':'')+(x.simulated?' ['+W.simulated+']':'')+': '+x.last+' '+unit+'   ';
  var tn=el('span','series-label',name);tn.setAttribute('data-key',x.key);leg.appendChild(tn);});
 if(!series.length)leg.appendChild(el('span','note',W.no_data));box.appendChild(leg);
}
function table(id,cols,heads,data,numeric,rowClass){
 var box=$(id);clear(box);if(!data.length){box.appendChild(el('p','note',W.none));return;}
 var tb=el('table','data');var hr=el('tr');heads.forEach(function(h){hr.appendChild(el('th',null,h));});
 var th=el('thead');th.appendChild(hr);tb.appendChild(th);var body=el('tbody');
 data.forEach(function(d){var tr=el('tr',rowClass?rowClass(d):null);cols.forEach(function(c){
  var v=(typeof c==='function')?c(d):d[c];var td=el('td',numeric.indexOf(c)>=0?'num':null,v);
  if(typeof c==='string')td.setAttribute('data-col',c);tr.appendChild(td);});
  body.appendChild(tr);});tb.appendChild(body);box.appendChild(tb);
}
var ROWCOLS=JSON.parse(document.getElementById('rowcols').textContent);
function renderRows(){
 var data=order.slice().reverse().map(function(k){return rows[k];});
 var cols=ROWCOLS.map(function(c){return function(d){var v=d.cells[c];
  if(c==='gpu_simulated')return v==='true'?W.simulated:(v==='false'?'':v);  // the page's word, not raw true
  return v;};});
 cols.push(function(d){return d.final?W.final:W.early;});cols.push(function(d){return d.reason;});
 cols.push(function(d){return d.answer;});
 var heads=ROWCOLS.map(function(c){return W['col_'+c]||c;}).concat([W.row_state,W.reason,W.answer]);
 var box=$('rows');clear(box);if(!data.length){box.appendChild(el('p','note',W.none));return;}
 var tb=el('table','data');tb.id='rows-table';var hr=el('tr');heads.forEach(function(h){hr.appendChild(el('th',null,h));});
 var th=el('thead');th.appendChild(hr);tb.appendChild(th);var body=el('tbody');
 data.forEach(function(d){var tr=el('tr',d.final?'final':'early');tr.setAttribute('data-rid',d.rid);
  cols.forEach(function(c,i){var td=el('td',i>=3&&i<ROWCOLS.length?'num':null,c(d));
   td.setAttribute('data-col',i<ROWCOLS.length?ROWCOLS[i]:['row_state','reason','answer'][i-ROWCOLS.length]);tr.appendChild(td);});
  body.appendChild(tr);});tb.appendChild(body);box.appendChild(tb);
}
function upsert(r){if(!(r.rid in rows))order.push(r.rid);rows[r.rid]=r;}
function render(){
 prune(S.gpus,S.now,S.window_s);prune(S.cpu,S.now,S.window_s);
 $('sim').style.display=S.simulated?'block':'none';
 plot('power',S.gpus,'W');plot('cpu',S.cpu,'%',100);
 table('inflight',['model','task','elapsed_s','first_token_s','tokens_so_far'],[W.col_model,W.col_task,W.elapsed_s,W.first_token_at,W.tokens_so_far],S.in_flight,['elapsed_s','first_token_s','tokens_so_far']);
 table('totals',['model','requests','tokens','gpu_energy_j','j_per_token','total_energy_j'],
  [W.col_model,W.requests,W.tokens,W.col_gpu_energy_j,W.col_j_per_token,W.col_total_energy_j],S.totals,['requests','tokens','gpu_energy_j','j_per_token','total_energy_j']);
 var b=S.batch||{},p=$('progress');clear(p);
 if(!b.id){p.appendChild(el('span',null,W.waiting));}else{
  p.appendChild(el('b',null,b.id+' '));var done=(b.ok||0)+(b.failed||0);
  p.appendChild(el('span',null,fmt(b.planned?W.progress:W.progress_open,{done:done,planned:b.planned,ok:b.ok||0,failed:b.failed||0,flying:S.in_flight.length})+' \u2014 '+(b.ended?(b.interrupted?W.interrupted:W.ended):W.running)));
  if(b.planned){var pr=document.createElement('progress');pr.max=b.planned;pr.value=Math.min(done,b.planned);p.appendChild(pr);}}
 var ul=$('problems');clear(ul);(S.problems.length?S.problems:[W.none]).forEach(function(x){ul.appendChild(el('li',null,x));});
 $('dropped').textContent=fmt(W.dropped,{n:viewerDropped});
}
function apply(d,full){
 S.gpus=mergeSeries(full?[]:S.gpus,d.gpus,full);S.cpu=mergeSeries(full?[]:S.cpu,d.cpu,full);
 ['now','in_flight','totals','batch','problems','simulated'].forEach(function(k){if(k in d)S[k]=d[k];});
 if(d.window_s)S.window_s=d.window_s;
}
var es=new EventSource('events');
es.addEventListener('open',function(){$('conn').textContent=W.connected;$('conn').className='on';});
es.addEventListener('error',function(){$('conn').textContent=W.disconnected;$('conn').className='';});
es.addEventListener('snapshot',function(e){var d=JSON.parse(e.data);rows={};order=[];window.__live.rows=rows;
 d.rows.forEach(upsert);apply(d,true);window.__live.snapshots++;window.__live.events++;render();renderRows();});
es.addEventListener('tick',function(e){apply(JSON.parse(e.data),false);window.__live.ticks++;window.__live.events++;render();});
es.addEventListener('row',function(e){upsert(JSON.parse(e.data));window.__live.events++;renderRows();});
es.addEventListener('viewer',function(e){viewerDropped=JSON.parse(e.data).dropped;});
window.addEventListener('error',function(e){window.__live.errors.push(String(e.message));});
})();
"""


def render_page(lang: str) -> str:
    w = words(lang)
    # JSON inside <script>: "<" written as \u003c so no text can close the element
    data = _json(w).replace("<", "\\u003c")
    cols = _json(list(ROW_COLUMNS)).replace("<", "\\u003c")
    html_lang = "zh-CN" if lang == "zh" else "en"
    from shared.escape import html_text as h

    return f"""<!DOCTYPE html>
<html lang="{html_lang}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{h(CSP_META)}">
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(w['title'])}</title><style>{CSS}</style></head>
<body>
<h1>{h(w['title'])} <span id="conn">…</span></h1>
<p class="note">{h(w['unauth'])} <span id="dropped"></span></p>
<div id="sim" class="sim" style="display:none">{h(w['sim_banner'])}</div>
<h2>{h(w['batch'])}</h2><div id="progress"></div>
<div class="grid2"><div style="flex:2 1 560px"><h2>{h(w['power'].format(m=5))}</h2><div id="power"></div></div>
<div style="flex:1 1 320px"><h2>{h(w['cpu'])}</h2><div id="cpu"></div></div></div>
<h2>{h(w['in_flight'])}</h2><div id="inflight" class="scroll"></div>
<h2>{h(w['finished'])}</h2><div id="rows" class="scroll"></div>
<h2>{h(w['totals'])}</h2><div id="totals"></div>
<h2>{h(w['problems'])}</h2><ul id="problems" class="problems"></ul>
<script type="application/json" id="words">{data}</script>
<script type="application/json" id="rowcols">{cols}</script>
<script>{JS}</script>
</body></html>
"""
