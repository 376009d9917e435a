// Tariffs per community: the version in force (in words), its history, and a new version
// (GET/POST /communities/{id}/tariffs). The server's tariff engine validates the rules;
// this page only helps write them.

import * as api from '../api.js';
import { h, mount, section, table, when, yuan, act, parseYuan, toast } from '../ui.js';

const TEMPLATES = {
  per_kwh: { mode: 'per_kwh', energy_fen_per_kwh: 60, service_fen_per_kwh: 40, minimum_charge_fen: 10 },
  tou: { mode: 'per_kwh', service_fen_per_kwh: 30, tou: [
    { name: 'valley', start: '00:00', end: '08:00', energy_fen_per_kwh: 35 },
    { name: 'flat', start: '08:00', end: '18:00', energy_fen_per_kwh: 60 },
    { name: 'peak', start: '18:00', end: '22:00', energy_fen_per_kwh: 90 },
    { name: 'flat', start: '22:00', end: '24:00', energy_fen_per_kwh: 60 }] },
  per_hour: { mode: 'per_hour', fen_per_hour: 25, billing_unit_minutes: 30, minimum_charge_fen: 10 },
  power_tier: { mode: 'power_tier', free_minutes: 5, power_bands: [
    { min_w: 0, max_w: 200, fen_per_hour: 20 }, { min_w: 200, max_w: 400, fen_per_hour: 30 },
    { min_w: 400, max_w: 800, fen_per_hour: 50 }, { min_w: 800, max_w: 1200, fen_per_hour: 80 }] },
};

/** The rules in words, as a resident would read them at the pile. */
export function describe(r) {
  const extra = [];
  if (r.minimum_charge_fen) extra.push(`最低 minimum ${yuan(r.minimum_charge_fen)}`);
  if (r.free_minutes) extra.push(`${r.free_minutes} 分钟免费 free minutes`);
  if (r.billing_unit_minutes) extra.push(`每 ${r.billing_unit_minutes} 分钟计费 billed per ${r.billing_unit_minutes} min`);
  let main;
  if (r.mode === 'per_kwh' && r.tou) {
    main = `分时电价 time of use: ${r.tou.map((p) => `${p.name} ${p.start}–${p.end} ${yuan(p.energy_fen_per_kwh)}/kWh`).join(', ')}`;
  } else if (r.mode === 'per_kwh') {
    main = `按电量 per kWh: 电费 energy ${yuan(r.energy_fen_per_kwh)}/kWh`;
  } else if (r.mode === 'per_hour') {
    main = `按时长 per hour: ${yuan(r.fen_per_hour)}/h`;
  } else if (r.mode === 'power_tier') {
    main = `按功率档位 power tiers: ${(r.power_bands || []).map((b) => `${b.min_w}–${b.max_w} W ${yuan(b.fen_per_hour)}/h`).join(', ')}`;
  } else {
    main = JSON.stringify(r);
  }
  if (r.service_fen_per_kwh) main += ` + 服务费 service ${yuan(r.service_fen_per_kwh)}/kWh`;
  return [main, ...extra].join('; ');
}

function effectiveFrom(value) {
  if (!value) return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

async function communityView(root, ctx, communities, id) {
  const versions = await api.get(`/communities/${id}/tariffs`);
  const now = Date.now();
  const inForce = [...versions].filter((v) => new Date(v.effective_from).getTime() <= now)
    .sort((a, b) => b.version - a.version)[0];
  const picker = h('select#community-select', {
    onchange: (e) => { location.hash = `#/tariffs/${e.target.value}`; },
  }, communities.map((c) => h('option', { value: c.id, selected: c.id === id }, c.name)));
  const post = async (rules, from) => {
    await act(() => api.post(`/communities/${id}/tariffs`,
      from ? { rules, effective_from: from } : { rules }), '新资费已保存 New tariff saved');
    await communityView(root, ctx, communities, id);
  };
  const parts = [
    h('h1', '资费 Tariffs ', picker),
    section('当前资费 In force',
      inForce ? [h('p#tariff-in-force', { dataset: { version: inForce.version } }, describe(inForce.rules)),
        h('p.muted', `version ${inForce.version} · since ${when(inForce.effective_from)}`)]
        : h('p.empty', 'No tariff yet: charging cannot start here until one is set.')),
    section('历史版本 Versions', table([...versions].sort((a, b) => b.version - a.version), [
      ['Version', (v) => v.version], ['Effective from', (v) => when(v.effective_from)],
      ['Rules', (v) => describe(v.rules)], ['Created', (v) => when(v.created_at)]],
    { rowAttrs: (v) => ({ dataset: { version: v.version } }) })),
  ];
  if (ctx.manages()) parts.push(editor(inForce, post));
  mount(root, ...parts);
}

function editor(inForce, post) {
  const quick = h('form.form.inline#quick-tariff', {
    onsubmit: async (e) => {
      e.preventDefault();
      const data = new FormData(e.target);
      const energy = parseYuan(data.get('energy'));
      const service = parseYuan(data.get('service') || '0');
      const minimum = parseYuan(data.get('minimum') || '0');
      if (energy === null || service === null || minimum === null) {
        toast('Prices are amounts in yuan, e.g. 0.60', 'error');
        return;
      }
      const rules = { mode: 'per_kwh', energy_fen_per_kwh: energy };
      if (service) rules.service_fen_per_kwh = service;
      if (minimum) rules.minimum_charge_fen = minimum;
      await post(rules, effectiveFrom(data.get('from'))).catch(() => null);
    },
  },
  h('label', h('span', '电费 energy (¥/kWh)'), h('input', { name: 'energy', required: true, inputmode: 'decimal', placeholder: '0.60' })),
  h('label', h('span', '服务费 service (¥/kWh)'), h('input', { name: 'service', inputmode: 'decimal', placeholder: '0.40' })),
  h('label', h('span', '最低 minimum (¥)'), h('input', { name: 'minimum', inputmode: 'decimal', placeholder: '0.10' })),
  h('label', h('span', '生效 effective from (blank = now)'), h('input', { name: 'from', type: 'datetime-local' })),
  h('button#quick-save', { type: 'submit' }, '保存 Save'));

  const text = h('textarea#rules-json', { rows: 12 });
  text.value = JSON.stringify(inForce ? inForce.rules : TEMPLATES.per_kwh, null, 2);
  const from = h('input', { type: 'datetime-local' });
  const advanced = h('form.form#rules-form', {
    onsubmit: async (e) => {
      e.preventDefault();
      let rules;
      try { rules = JSON.parse(text.value); } catch (err) {
        toast(`The rules are not valid JSON: ${err.message}`, 'error');
        return;
      }
      await post(rules, effectiveFrom(from.value)).catch(() => null);
    },
  },
  h('div.actions', Object.keys(TEMPLATES).map((k) => h('button.secondary', {
    type: 'button', onclick: () => { text.value = JSON.stringify(TEMPLATES[k], null, 2); },
  }, `模板 ${k}`))),
  h('label', h('span', 'Rules (JSON: mode per_kwh | per_hour | power_tier; money in fen)'), text),
  h('label', h('span', '生效 effective from (blank = now)'), from),
  h('button#rules-save', { type: 'submit' }, '保存新版本 Save new version'));

  return h('div.row', section('调整电价 New per-kWh price', quick),
    section('高级 Any tariff (rules)', advanced));
}

export async function render(root, ctx, params) {
  const communities = await api.get('/communities', { limit: 200 });
  if (!communities.length) { mount(root, h('p.empty', 'No community to price yet.')); return; }
  const id = params.id && communities.some((c) => c.id === params.id) ? params.id : communities[0].id;
  await communityView(root, ctx, communities, id);
}
