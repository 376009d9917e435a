// Small DOM helpers and the console's formatting rules (money arrives in integer fen).

/** h('div.card#x', {onclick}, child, ...) — an element with attributes and children. */
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  rest.forEach((p) => (p[0] === '.' ? el.classList.add(p.slice(1)) : (el.id = p.slice(1))));
  if (attrs !== undefined && attrs !== null
      && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  Object.entries(attrs || {}).forEach(([k, v]) => {
    if (v === undefined || v === null || v === false) return;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  });
  append(el, children);
  return el;
}

function append(el, children) {
  children.flat(Infinity).forEach((c) => {
    if (c === undefined || c === null || c === false) return;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  });
}

export function mount(root, ...children) {
  root.replaceChildren();
  append(root, children);
  return root;
}

// ------------------------------------------------------------------ formatting

/** 1234 fen → "¥12.34"; integers only, so no float ever touches money. */
export function yuan(fen) {
  if (fen === null || fen === undefined) return '—';
  const sign = fen < 0 ? '-' : '';
  const a = Math.abs(fen);
  return `${sign}¥${Math.trunc(a / 100)}.${String(a % 100).padStart(2, '0')}`;
}

/** "12.34" (yuan typed by a person) → 1234 fen, or null if it is not a money amount. */
export function parseYuan(text) {
  const m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text || '');
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || '').padEnd(2, '0'));
}

export const kwh = (wh) => (wh === null || wh === undefined ? '—'
  : `${(wh / 1000).toFixed(wh % 1000 === 0 ? 0 : 3)} kWh`);
export const watts = (w) => (w === null || w === undefined ? '—'
  : w >= 1000 ? `${(w / 1000).toFixed(2)} kW` : `${w} W`);
export const permille = (p) => (p === null || p === undefined ? '—' : `${(p / 10).toFixed(1)}%`);

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString('zh-CN', { hour12: false });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const m = Math.round(seconds / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export const STATUS_LABELS = {
  idle: '空闲 idle', plugged: '已插枪 plugged', charging: '充电中 charging', full: '已充满 full',
  fault: '故障 fault', offline: '离线 offline',
};

export const badge = (text, kind) => h(`span.badge.${kind || text}`, text);

// ------------------------------------------------------------------ feedback

export function toast(message, kind = 'ok') {
  const el = document.getElementById('toast');
  el.className = `show ${kind}`;
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ''; }, 4000);
}

/** The API's error (code + message + field details) in words for a person. */
export function explain(err) {
  const out = [];
  const walk = (v, path) => {
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) out.push(`${path}: ${v.join(', ')}`);
    else if (v && typeof v === 'object') {
      Object.entries(v).forEach(([k, x]) => walk(x, ['json', 'query', 'form'].includes(k) ? path : (path ? `${path}.${k}` : k)));
    } else if (v !== undefined) out.push(`${path}: ${v}`);
  };
  if (err && err.details && err.details.fields) walk(err.details.fields, '');
  const base = (err && err.message) || String(err);
  return out.length ? `${base} (${out.join('; ')})` : base;
}

/** Run an action, report success or the API's error, and return its result. */
export async function act(fn, okMessage) {
  try {
    const out = await fn();
    if (okMessage) toast(okMessage, 'ok');
    return out;
  } catch (err) {
    toast(explain(err), 'error');
    throw err;
  }
}

// ------------------------------------------------------------------ building blocks

/** A table: columns are [header, row => cell]; `empty` is shown when there are no rows. */
export function table(rows, columns, { empty = 'Nothing yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p.empty', empty);
  return h('table',
    h('thead', h('tr', columns.map(([label]) => h('th', label)))),
    h('tbody', rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : null,
      columns.map(([, cell]) => h('td', cell(r)))))));
}

/**
 * A form from field specs: {name, label, type ('text'|'number'|'select'|'textarea'|'yuan'|
 * 'password'|'date'|'month'), options: [[value, label]], value, required, placeholder}.
 * onSubmit gets the values (yuan fields already in fen) and may return a promise.
 */
export function form(fields, onSubmit, { submit = 'Save', id } = {}) {
  const inputs = {};
  const el = h('form.form', { id });
  fields.forEach((f) => {
    let input;
    if (f.type === 'select') {
      input = h('select', { name: f.name },
        f.options.map(([v, label]) => h('option', { value: v, selected: String(v) === String(f.value ?? '') }, label)));
    } else if (f.type === 'textarea') {
      input = h('textarea', { name: f.name, rows: f.rows || 6, placeholder: f.placeholder || '' });
      input.value = f.value ?? '';
    } else {
      const type = { yuan: 'text', number: 'number' }[f.type] || f.type || 'text';
      input = h('input', { name: f.name, type, placeholder: f.placeholder || '',
        step: f.type === 'number' ? (f.step || 'any') : undefined,
        inputmode: f.type === 'yuan' ? 'decimal' : undefined, autocomplete: f.autocomplete });
      input.value = f.value ?? '';
    }
    if (f.required) input.required = true;
    inputs[f.name] = input;
    el.append(h('label', h('span', f.label), input));
  });
  const button = h('button', { type: 'submit' }, submit);
  el.append(button);
  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    const values = {};
    for (const f of fields) {
      const raw = inputs[f.name].value.trim();
      if (raw === '' && !f.required) continue;
      if (f.type === 'yuan') {
        const fen = parseYuan(raw);
        if (fen === null) { toast(`${f.label}: enter an amount in yuan, e.g. 50 or 12.50`, 'error'); return; }
        values[f.name] = fen;
      } else if (f.type === 'number') {
        values[f.name] = Number(raw);
      } else {
        values[f.name] = raw;
      }
    }
    button.disabled = true;
    try { await onSubmit(values, el); } catch { /* act() has told the user */ } finally {
      button.disabled = false;
    }
  });
  return el;
}

export const section = (title, ...children) => h('section.card', h('h2', title), children);

export function stat(label, value, kind) {
  return h(`div.stat${kind ? `.${kind}` : ''}`, h('div.value', value), h('div.label', label));
}
