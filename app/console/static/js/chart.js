// Bar and line charts drawn as inline SVG: two chart kinds do not justify a charting
// library and a build step, and SVG text stays readable in screenshots and tests.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
  children.forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/**
 * chart({kind: 'bar'|'line', labels, values, title, format}) → <figure> with an SVG.
 * `format` turns a value into axis/tooltip text (money, kWh, %).
 */
export function chart({ kind = 'bar', labels, values, title, format = String, id }) {
  const W = 640; const H = 240; const L = 64; const R = 12; const T = 16; const B = 44;
  const max = niceMax(Math.max(0, ...values.filter((v) => v !== null)));
  const x0 = L; const plotW = W - L - R; const plotH = H - T - B;
  const y = (v) => T + plotH - (v / max) * plotH;
  const step = labels.length ? plotW / labels.length : plotW;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, class: `chart ${kind}` });
  for (let i = 0; i <= 4; i += 1) {
    const v = (max * i) / 4;
    svg.append(s('line', { x1: x0, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: x0 - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, format(v)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 12));
  labels.forEach((label, i) => {
    if (i % every === 0) {
      svg.append(s('text', { x: x0 + step * (i + 0.5), y: H - B + 16, 'text-anchor': 'middle', class: 'axis' },
        label.length > 7 ? label.slice(5) : label));
    }
  });
  if (kind === 'bar') {
    values.forEach((v, i) => {
      if (v === null) return;
      const bar = s('rect', { x: x0 + step * i + step * 0.15, y: y(v), width: step * 0.7,
        height: Math.max(0, T + plotH - y(v)), class: 'bar', 'data-label': labels[i], 'data-value': v });
      bar.append(s('title', {}, `${labels[i]}: ${format(v)}`));
      svg.append(bar);
    });
  } else {
    const pts = values.map((v, i) => (v === null ? null : [x0 + step * (i + 0.5), y(v)]));
    const d = pts.filter(Boolean).map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join(' ');
    svg.append(s('path', { d, class: 'line' }));
    pts.forEach((p, i) => {
      if (!p) return;
      const dot = s('circle', { cx: p[0], cy: p[1], r: 3.5, class: 'dot', 'data-label': labels[i], 'data-value': values[i] });
      dot.append(s('title', {}, `${labels[i]}: ${format(values[i])}`));
      svg.append(dot);
    });
  }
  const fig = document.createElement('figure');
  fig.className = 'chart';
  if (id) fig.id = id;
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  fig.append(cap, svg);
  return fig;
}
