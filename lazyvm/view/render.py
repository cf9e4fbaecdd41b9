"""SVG of one snapshot, and the self-contained HTML page of a scenario.

Columns left to right: page directories, then each lower table level, then frames and
swap slots.  An arrow runs from each entry (row) to what it points at, so two page
directories pointing at one table show sharing directly.  Marks (from model.diff) tint
boxes and rows: new (green), changed (yellow), gone (red, dashed).
"""
from __future__ import annotations

import json
from html import escape

W = 306            # box width
GAP = 46           # between columns
HEAD = 36          # box header height
ROW = 16           # row height
VGAP = 12          # between boxes
TOP = 30           # column titles

CSS = """
.lz svg{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.lz .coltitle{font:bold 13px system-ui,sans-serif;fill:#333}
.lz .box{fill:#fff;stroke:#567;stroke-width:1.2}
.lz .pgd .box{fill:#eef4ff}
.lz .table .box,.lz .group .box{fill:#f4fbf4}
.lz .shared .box{stroke:#d9730d;stroke-width:3}
.lz .frame .box,.lz .frames .box,.lz .frameset .box{fill:#f6f2ff}
.lz .k-reserved .box{fill:#eee}
.lz .k-shmem .box{fill:#ffeefa}
.lz .swap .box{fill:#f2f2f2;stroke-dasharray:4 2}
.lz .title{font-weight:bold;fill:#123}
.lz .sub{fill:#456}
.lz .use2{fill:#b35400;font-weight:bold}
.lz .row text{fill:#222}
.lz .row rect{fill:transparent}
.lz .f-RO rect.tag{fill:#ffe2b8}
.lz .f-RW rect.tag{fill:#d4f2d4}
.lz .f-PROTNONE rect.tag,.lz .f-swap rect.tag{fill:#ddd}
.lz .tagtext{font-size:10px;font-weight:bold}
.lz .f-kernel text,.lz .f-more text,.lz .f-empty text{fill:#888}
.lz .edge{fill:none;stroke:#789;stroke-width:1.2}
.lz .edge.RO{stroke:#d9730d;stroke-dasharray:5 3}
.lz .m-new .box{fill:#c9f5c9}
.lz .m-changed .box{fill:#fff4a8}
.lz .m-gone .box{fill:#ffd0d0;stroke:#c00;stroke-dasharray:6 3}
.lz .row.m-row rect.hl{fill:#ffe14d}
.lz .row.chainhit rect.hl{fill:#7fd3ff}
.lz .node.chainsel .box{stroke:#0077cc;stroke-width:3}
.lz .frame{cursor:pointer}
"""


def _ytext(y):
    return y + ROW - 4


def svg(state, marks=None, rowmarks=None, title=None, standalone=False):
    """The SVG of one snapshot.  marks: {key: "new"|"changed"|"gone"}; rowmarks:
    {key: [row index, ...]}.  standalone: add the XML header and the style sheet."""
    marks = marks or {}
    rowmarks = rowmarks or {}
    nodes = state["nodes"]
    ncols = state["levels"] + 1
    cols = [[] for _ in range(ncols)]
    for node in nodes.values():
        cols[node["col"]].append(node)
    pos = {}
    heights = []
    for c, col in enumerate(cols):
        y = TOP + 8
        for node in col:
            h = HEAD + ROW * len(node.get("rows", ())) + (4 if node.get("rows") else 0)
            pos[node["key"]] = (10 + c * (W + GAP), y, h)
            y += h + VGAP
        heights.append(y)
    width = 20 + ncols * W + (ncols - 1) * GAP
    height = max(heights + [TOP + 60]) + 10
    names = state["level_names"]
    coltitles = ["page directories (" + names[0] + ")"] + \
        [f"{n} tables" for n in names[1:]] + ["frames"]
    out = []
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="state" width="{width}" '
               f'height="{height}" viewBox="0 0 {width} {height}">')
    if standalone:
        out.append(f"<style>{CSS.replace('.lz ', '')}</style>"
                   '<rect width="100%" height="100%" fill="#fff"/>')
    if title:
        out.append(f"<title>{escape(title)}</title>")
    for c, t in enumerate(coltitles):
        out.append(f'<text class="coltitle" x="{10 + c * (W + GAP)}" y="{TOP - 10}">'
                   f"{escape(t)}</text>")
    if not nodes:
        out.append(f'<text class="sub" x="10" y="{TOP + 30}">no live processes: every '
                   "frame but the boot-time ones is free</text>")
    edges = []
    boxes = []
    for node in nodes.values():
        x, y, h = pos[node["key"]]
        boxes.append(_box(node, x, y, h, marks.get(node["key"]),
                          set(rowmarks.get(node["key"], ()))))
        for i, r in enumerate(node.get("rows", ())):
            t = r.get("target")
            if not t or t not in pos:
                continue
            tx, ty, _ = pos[t]
            sx, sy = x + W, y + HEAD + i * ROW + ROW / 2
            ey = ty + HEAD / 2
            dx = max(30, (tx - sx) / 2)
            cls = "edge RO" if r["flag"] == "RO" else "edge"
            edges.append(f'<path class="{cls}" d="M{sx:.0f},{sy:.0f} C{sx + dx:.0f},{sy:.0f} '
                         f'{tx - dx:.0f},{ey:.0f} {tx:.0f},{ey:.0f}"/>')
    out.extend(edges)
    out.extend(boxes)
    out.append("</svg>")
    return "".join(out)


def _box(node, x, y, h, mark, rowmark):
    k = node["kind"]
    cls = ["node", k]
    if k in ("table", "group") and node.get("use", 1) > 1:
        cls.append("shared")
    if "fkind" in node:
        cls.append("k-" + node["fkind"])
    if mark:
        cls.append("m-" + mark)
    attrs = {"data-key": node["key"], "data-kind": k}
    if "use" in node:
        attrs["data-use"] = node["use"]
    if "ref" in node:
        attrs["data-ref"] = node["ref"]
    if "pfn" in node:
        attrs["data-pfn"] = node["pfn"]
    if "chain" in node:
        attrs["data-chain"] = " ".join(f"{t}:{i}" for t, i in node["chain"])
    if node.get("owners"):
        attrs["data-owners"] = " ".join(map(str, node["owners"]))
    title, sub, usecls = _heading(node)
    a = " ".join(f'{n}="{escape(str(v))}"' for n, v in attrs.items())
    parts = [f'<g class="{" ".join(cls)}" {a} transform="translate({x},{y})">',
             f'<rect class="box" width="{W}" height="{h}" rx="5"/>',
             f'<text class="title" x="8" y="15">{escape(title)}</text>',
             f'<text class="sub{usecls}" x="8" y="30">{escape(sub)}</text>']
    for i, r in enumerate(node.get("rows", ())):
        ry = HEAD + i * ROW
        rc = f'row f-{r["flag"]}' + (" m-row" if i in rowmark else "")
        tag = r["flag"] if r["flag"] in ("RO", "RW", "PROTNONE", "swap") else ""
        parts.append(f'<g class="{rc}" data-t="{r["t"]}" data-lo="{r["lo"]}" '
                     f'data-hi="{r["hi"]}"><rect class="hl" x="2" y="{ry}" width="{W - 4}" '
                     f'height="{ROW}"/><text x="8" y="{_ytext(ry)}">{escape(r["text"])}</text>')
        if tag:
            tw = 8 + 7 * len(tag)
            parts.append(f'<rect class="tag" x="{W - tw - 6}" y="{ry + 2}" width="{tw}" '
                         f'height="{ROW - 4}" rx="3"/><text class="tagtext" '
                         f'x="{W - tw - 2}" y="{_ytext(ry) - 1}">{tag}</text>')
        parts.append("</g>")
    parts.append("</g>")
    return "".join(parts)


def _heading(node):
    k = node["kind"]
    owners = node.get("owners", [])
    who = ("pid " if len(owners) == 1 else "pids ") + ",".join(map(str, owners)) if owners else ""
    if k == "pgd":
        return f"pid {node.get('pid')} \u00b7 pgd #{node['pfn']}", \
            f"page directory, {sum(r['hi'] - r['lo'] + 1 for r in node['rows'] if r['target'])}" \
            " user entries", ""
    if k in ("table", "group"):
        use = node["use"]
        what = "SHARED" if use > 1 else "private"
        if k == "table":
            title = f"{node['name']} table #{node['pfn']}"
        else:
            title = f"{node['count']} {node['name']} tables"
        return title, f"use {use} \u00b7 {what} \u00b7 {who}", " use2" if use > 1 else ""
    if k == "frame":
        kind = "ZERO_PAGE (reserved)" if node["fkind"] == "reserved" else node["fkind"]
        chain = ""
        if "chain" in node:
            chain = f" \u00b7 chain {len(node['chain'])}"
        return f"frame #{node['pfn']} \u00b7 {kind}", f"ref {node['ref']}{chain}", \
            " use2" if node["ref"] > 1 else ""
    if k == "frames":
        return f"{node['n']} frames #{node['lo']}\u2013#{node['hi']}", \
            f"{node['fkind']} \u00b7 ref {node['ref']} each", " use2" if node["ref"] > 1 else ""
    if k == "frameset":
        return f"{node['n']} frames #{node['lo']}\u2013#{node['hi']}", node["refs"], ""
    if k == "swap":
        s = str(node["lo"]) if node["n"] == 1 else f"{node['lo']}\u2013{node['hi']}"
        return f"swap slot {s}", "on the swap device", ""
    return k, "", ""


# -- the page -----------------------------------------------------------------------

JS = r"""
(function(){
var t0=performance.now();
var D=JSON.parse(document.getElementById('lz-data').textContent);
var cur=1, N=D.steps.length, SELFTEST=/selftest/.test(location.hash);
function $(s,r){return (r||document).querySelector(s);}
function $$(s,r){return Array.prototype.slice.call((r||document).querySelectorAll(s));}
function put(pane,state,marks,rows){
  var host=$(pane); host.innerHTML='';
  host.appendChild(document.getElementById('s'+state).content.cloneNode(true));
  Object.keys(marks).forEach(function(k){
    $$('[data-key="'+k+'"]',host).forEach(function(g){g.classList.add('m-'+marks[k]);});});
  Object.keys(rows).forEach(function(k){
    var g=$('[data-key="'+k+'"]',host); if(!g) return;
    var rs=$$('.row',g); rows[k].forEach(function(i){ if(rs[i]) rs[i].classList.add('m-row');});});
}
function show(n){
  n=Math.max(1,Math.min(N,n)); cur=n; var s=D.steps[n-1];
  put('#before',n-1,s.diff.before,s.diff.rows_before);
  put('#after',n,s.diff.after,s.diff.rows_after);
  $('#steptitle').textContent='Step '+n+' of '+N+': '+s.title;
  $('#stepnote').textContent=s.note||'';
  var ul=$('#changes'); ul.innerHTML='';
  (s.diff.changes.length?s.diff.changes:['nothing in the tables changed']).forEach(function(c){
    var li=document.createElement('li'); li.textContent=c; ul.appendChild(li);});
  var tb=$('#stats tbody'); tb.innerHTML='';
  Object.keys(s.diff.stats).sort().forEach(function(k){
    var v=s.diff.stats[k], tr=document.createElement('tr');
    var d=v[1]-v[0];
    tr.innerHTML='<td></td><td class="n"></td><td class="n"></td><td class="n"></td>';
    tr.children[0].textContent=k; tr.children[1].textContent=v[0];
    tr.children[2].textContent=v[1]; tr.children[3].textContent=(d>0?'+':'')+d;
    tb.appendChild(tr);});
  if(!tb.children.length){tb.innerHTML='<tr><td colspan="4">no counter changed</td></tr>';}
  $$('#steps li').forEach(function(li,i){li.classList.toggle('on',i===n-1);});
  $('#prev').disabled=(n===1); $('#next').disabled=(n===N);
  document.documentElement.setAttribute('data-current-step',String(n));
  $('#chain').textContent='Click a frame to see its pte_chain (rmap).';
  var h='#step='+n+(document.body.classList.contains('onlyafter')?'&after':'');
  if(location.hash!==h && !/chain=/.test(location.hash) && history.replaceState) history.replaceState(null,'',h);
}
function chain(g){
  var host=g.closest('.pane'), slots=(g.getAttribute('data-chain')||'').split(' ').filter(Boolean);
  $$('.chainhit',host).forEach(function(r){r.classList.remove('chainhit');});
  $$('.chainsel',host).forEach(function(r){r.classList.remove('chainsel');});
  g.classList.add('chainsel');
  var pf=g.getAttribute('data-pfn'), hits=0;
  slots.forEach(function(s){var p=s.split(':'), t=p[0], i=+p[1];
    $$('.row[data-t="'+t+'"]',host).forEach(function(r){
      if(+r.getAttribute('data-lo')<=i && i<=+r.getAttribute('data-hi')
         && r.closest('.node').getAttribute('data-kind')!=='pgd'){r.classList.add('chainhit');hits++;}});});
  var msg;
  if(!D.rmap) msg='frame #'+pf+': this machine runs without rmap (no pte_chains).';
  else if(!g.hasAttribute('data-chain')) msg='frame #'+pf+': reserved frames have no chain.';
  else msg='frame #'+pf+' (ref '+g.getAttribute('data-ref')+'): chain of '+slots.length+
    ' slot'+(slots.length===1?'':'s')+': '+slots.map(function(s){var p=s.split(':');
    return 'table #'+p[0]+'['+p[1]+']';}).join(', ')+' (highlighted in blue)';
  $('#chain').textContent=msg;
  document.documentElement.setAttribute('data-chain-shown',pf+':'+slots.length+':'+hits);
}
document.addEventListener('click',function(e){
  var g=e.target.closest&&e.target.closest('.node.frame'); if(g) chain(g);});
$('#prev').onclick=function(){show(cur-1);}; $('#next').onclick=function(){show(cur+1);};
$$('#steps li').forEach(function(li,i){li.onclick=function(){show(i+1);};});
document.addEventListener('keydown',function(e){
  if(e.key==='ArrowRight'||e.key==='j') show(cur+1); if(e.key==='ArrowLeft'||e.key==='k') show(cur-1);});
$('#onlyafter').onchange=function(){document.body.classList.toggle('onlyafter',this.checked);};
function fromHash(){var m=/step=(\d+)/.exec(location.hash); var c=/chain=(\d+)/.exec(location.hash);
  if(/(^|[#&])after(&|$)/.test(location.hash)){$('#onlyafter').checked=true;document.body.classList.add('onlyafter');}
  show(m?+m[1]:1);
  if(c){var g=$('#after .node.frame[data-pfn="'+c[1]+'"]'); if(g) chain(g);}}
window.addEventListener('hashchange',function(){var m=/step=(\d+)/.exec(location.hash);
  if(m && +m[1]!==cur) fromHash();});
fromHash();
document.documentElement.setAttribute('data-render-ms',(performance.now()-t0).toFixed(1));
if(SELFTEST){  // drive the real controls, for the browser tests
  var log=[], ok=true;
  function expect(what,got,want){ if(String(got)!==String(want)){ok=false;log.push(what+': '+got+' != '+want);} }
  var root=document.documentElement;
  show(1); $('#next').click(); $('#next').click();
  expect('next twice',root.getAttribute('data-current-step'),Math.min(3,N));
  document.dispatchEvent(new KeyboardEvent('keydown',{key:'ArrowLeft'}));
  expect('ArrowLeft',root.getAttribute('data-current-step'),Math.min(2,N));
  $('#prev').click(); expect('prev',root.getAttribute('data-current-step'),1);
  expect('prev disabled at 1',$('#prev').disabled,true);
  $$('#steps li')[N-1].click(); expect('step list',root.getAttribute('data-current-step'),N);
  expect('next disabled at N',$('#next').disabled,true);
  var fr=null, k;
  for(k=N;k>=1 && !fr;k--){ show(k); fr=$('#after .node.frame[data-chain]'); }
  if(fr){ fr.querySelector('rect').dispatchEvent(new MouseEvent('click',{bubbles:true}));
    var shown=(root.getAttribute('data-chain-shown')||'').split(':');
    expect('chain click frame',shown[0],fr.getAttribute('data-pfn'));
    expect('chain slots highlighted',shown[2],shown[1]); }
  $('#onlyafter').click();
  expect('after only',document.body.classList.contains('onlyafter'),true);
  root.setAttribute('data-selftest',ok?'ok':log.join('; '));
}
document.documentElement.setAttribute('data-ready','1');
})();
"""

PAGE_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#111;background:#fafafa}
header{padding:12px 20px;background:#1d3557;color:#fff}
header h1{margin:0 0 4px;font-size:20px} header p{margin:0;max-width:70em;color:#dde}
.cfg{font-family:ui-monospace,monospace;font-size:12px;color:#bcd}
main{display:flex;gap:0}
nav{width:210px;flex:none;padding:10px;border-right:1px solid #ccc;background:#fff;min-height:100vh}
nav ol{padding-left:22px;margin:6px 0} nav li{cursor:pointer;padding:3px 4px;border-radius:4px}
nav li.on{background:#1d3557;color:#fff}
nav button{font-size:14px;padding:4px 10px;margin-right:4px}
.content{flex:1;padding:10px 16px;min-width:0}
#steptitle{margin:4px 0;font-size:18px}
#stepnote{max-width:75em;margin:4px 0 8px;font-size:15px}
.info{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
#changes{margin:0;padding-left:20px;max-width:50em;font-size:13px}
#stats{border-collapse:collapse;font-size:12px} #stats td{padding:1px 8px;border-bottom:1px solid #eee}
#stats td.n{text-align:right;font-family:ui-monospace,monospace}
.panes{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;margin-top:8px}
.pane{background:#fff;border:1px solid #ccc;border-radius:6px;padding:4px;overflow:auto;max-width:100%}
.pane h3{margin:2px 6px;font-size:14px;color:#555}
body.onlyafter #beforewrap{display:none}
.legend{font-size:12px;color:#333;margin:6px 0}
.legend span{display:inline-block;padding:0 6px;margin-right:6px;border-radius:3px;border:1px solid #999}
#chain{font-size:13px;margin:6px 0;color:#035;min-height:1.4em}
"""


def page(scenario, states, diffs, name="scenario"):
    """The HTML page: states[0] is the machine before step 1, states[k] after step k;
    diffs[k-1] = model.diff(states[k-1], states[k])."""
    steps = scenario["step"]
    from .scenario import step_title
    data = {"rmap": states[-1]["rmap"] if states else False,
            "steps": [{"title": step_title(st), "note": st.get("note", ""), "diff": d}
                      for st, d in zip(steps, diffs)]}
    templates = "".join(f'<template id="s{k}">{svg(s)}</template>'
                        for k, s in enumerate(states))
    mach = scenario.get("machine", {})
    cfg = ", ".join(f"{k}={v!r}" for k, v in mach.items())
    items = "".join(f"<li>{escape(step_title(st))}</li>" for st in steps)
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    legend = ('<div class="legend"><span style="border:3px solid #d9730d">shared table '
              '(use &gt; 1)</span><span style="background:#ffe2b8">RO: write-protected '
              'entry</span><span style="background:#d4f2d4">RW</span>'
              '<span style="background:#c9f5c9">new</span><span style="background:#fff4a8">'
              'changed</span><span style="background:#ffd0d0">gone</span>'
              '<span style="background:#ffe14d">changed entry</span>'
              '<span style="background:#7fd3ff">chain slot</span></div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lazyvm show: {escape(scenario.get('title', name))}</title>
<script>(function(){{var E=[];function rec(m){{E.push(String(m));
document.documentElement.setAttribute('data-errors',E.join(' | '));}}
document.documentElement.setAttribute('data-errors','');
window.addEventListener('error',function(e){{rec(e.message||'error');}});
window.addEventListener('unhandledrejection',function(e){{rec('rejection: '+e.reason);}});
var ce=console.error;console.error=function(){{rec(Array.prototype.join.call(arguments,' '));
return ce.apply(console,arguments);}};}})();</script>
<style>{PAGE_CSS}{CSS}</style></head>
<body class="lz">
<header><h1>{escape(scenario.get('title', name))}</h1>
<p>{escape(scenario.get('about', ''))}</p>
<div class="cfg">lazyvm show {escape(name)} \u00b7 Machine({escape(cfg)}) \u00b7 layout {escape(states[0]['layout'])}</div></header>
<main><nav><button id="prev">\u25c0 prev</button><button id="next">next \u25b6</button>
<ol id="steps">{items}</ol>
<label><input type="checkbox" id="onlyafter"> after only</label>
<p style="font-size:12px;color:#666">Keys: \u2190 \u2192. Click a frame for its chain.</p></nav>
<div class="content"><h2 id="steptitle"></h2><p id="stepnote"></p>
<div class="info"><div><b>What changed</b><ul id="changes"></ul></div>
<div><b>Counters</b><table id="stats"><thead><tr><td>counter</td><td class="n">before</td>
<td class="n">after</td><td class="n">\u0394</td></tr></thead><tbody></tbody></table></div></div>
{legend}<div id="chain"></div>
<div class="panes"><div class="pane" id="beforewrap"><h3>before</h3><div id="before"></div></div>
<div class="pane" id="afterwrap"><h3>after</h3><div id="after"></div></div></div>
</div></main>
<div hidden>{templates}</div>
<script type="application/json" id="lz-data">{blob}</script>
<script>{JS}</script>
</body></html>
"""


def machine_page(state, title="lazyvm machine"):
    """A small HTML fragment of one snapshot (for Jupyter: no script, inline style)."""
    return (f'<div class="lz"><style>{CSS}</style><div style="overflow:auto">'
            f"{svg(state, title=title)}</div></div>")
