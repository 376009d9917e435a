// Reports: revenue, energy, sessions, utilisation, top-ups and refunds per community and
// day or month (GET /reports/daily|monthly), as charts and a table, with CSV/XLSX export;
// and the monthly per-user / per-port / master-meter data set of one community
// (GET /communities/{id}/reports/{month}).

import * as api from '../api.js';
import { h, mount, section, table, yuan, kwh, permille, stat, act } from '../ui.js';
import { chart } from '../chart.js';

const iso = (d) => d.toISOString().slice(0, 10);
const active = (r) => r.sessions || r.energy_wh || r.revenue_fen || r.topups_fen || r.refunds_fen
  || r.topup_reversals_fen;

function defaults(q) {
  const today = new Date();
  const granularity = q.get('by') === 'month' ? 'month' : 'day';
  if (granularity === 'month') {
    const from = new Date(today.getFullYear(), today.getMonth() - 5, 1);
    return { granularity, from: q.get('from') || iso(from).slice(0, 7), to: q.get('to') || iso(today).slice(0, 7) };
  }
  const from = new Date(today.getTime() - 13 * 86400000);
  return { granularity, from: q.get('from') || iso(from), to: q.get('to') || iso(today) };
}

function charts(report) {
  const { labels, series } = report.chart;
  return h('div.grid.charts',
    chart({ kind: 'bar', labels, values: series.revenue_fen, title: '收入 Revenue', format: (v) => yuan(Math.round(v)), id: 'chart-revenue' }),
    chart({ kind: 'bar', labels, values: series.energy_wh, title: '电量 Energy', format: (v) => kwh(Math.round(v)), id: 'chart-energy' }),
    chart({ kind: 'line', labels, values: series.sessions, title: '充电次数 Sessions', format: (v) => String(Math.round(v)), id: 'chart-sessions' }),
    chart({ kind: 'line', labels, values: series.utilisation_per_mille, title: '利用率 Utilisation (busy / available port-hours)', format: (v) => permille(Math.round(v)), id: 'chart-utilisation' }));
}

export async function render(root, ctx, params) {
  const q = params.query;
  const f = { ...defaults(q), community_id: q.get('community_id') || '' };
  const communities = await api.get('/communities', { limit: 200 });
  const path = f.granularity === 'month' ? '/reports/monthly' : '/reports/daily';
  const args = { from: f.from, to: f.to, community_id: f.community_id || undefined };
  const report = await api.get(path, args);
  const t = report.totals;
  const type = f.granularity === 'month' ? 'month' : 'date';
  const go = (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    const next = new URLSearchParams([...data.entries()].filter(([, v]) => v));
    location.hash = `#/reports?${next}`;
  };
  const byMonth = communities.length ? datasetForm(communities, f) : '';
  mount(root,
    h('h1', '报表 Reports'),
    h('form.form.inline#report-filter', { onsubmit: go },
      h('label', h('span', 'By'), h('select', { name: 'by', onchange: (e) => { location.hash = `#/reports?by=${e.target.value}`; } },
        h('option', { value: 'day', selected: f.granularity === 'day' }, '按日 daily'),
        h('option', { value: 'month', selected: f.granularity === 'month' }, '按月 monthly'))),
      h('label', h('span', 'From'), h('input', { name: 'from', type, value: f.from })),
      h('label', h('span', 'To'), h('input', { name: 'to', type, value: f.to })),
      h('label', h('span', 'Community'), h('select', { name: 'community_id' },
        h('option', { value: '' }, 'all communities'),
        communities.map((c) => h('option', { value: c.id, selected: String(c.id) === f.community_id }, c.name)))),
      h('button', { type: 'submit' }, '查询 Show')),
    section('合计 Totals', h('div.stats#report-totals',
      stat('收入 revenue', yuan(t.revenue_fen)), stat('电量 energy', kwh(t.energy_wh)),
      stat('次数 sessions', t.sessions), stat('充值 top-ups', yuan(t.topups_fen)),
      stat('退款 refunds', yuan(t.refunds_fen)), stat('利用率 utilisation', permille(t.utilisation_per_mille))),
    h('div.actions.no-print',
      h('button.secondary', { onclick: () => act(() => api.download(path, { ...args, format: 'csv' }, `report-${f.from}-${f.to}.csv`)) }, '导出 CSV'),
      h('button.secondary', { onclick: () => act(() => api.download(path, { ...args, format: 'xlsx' }, `report-${f.from}-${f.to}.xlsx`)) }, '导出 XLSX'))),
    section('图表 Charts', charts(report)),
    section('明细 Rows (days or months with activity)', table(report.rows.filter(active), [
      ['Community', (r) => r.community], ['Period', (r) => r.period], ['Sessions', (r) => r.sessions],
      ['Energy', (r) => kwh(r.energy_wh)], ['Revenue', (r) => yuan(r.revenue_fen)],
      ['Coins', (r) => yuan(r.coin_fen)], ['Top-ups', (r) => yuan(r.topups_fen)],
      ['Refunds', (r) => yuan(r.refunds_fen)], ['Utilisation', (r) => permille(r.utilisation_per_mille)]],
    { empty: 'No data in this period.' })),
    byMonth);
}

/** The monthly data set (per user, per port, master meter) for one community, as a file. */
function datasetForm(communities, f) {
  const month = h('input', { name: 'month', type: 'month', value: (f.to || '').slice(0, 7) });
  const community = h('select', { name: 'community' },
    communities.map((c) => h('option', { value: c.id, selected: String(c.id) === f.community_id }, c.name)));
  const get = (format) => act(() => api.download(`/communities/${community.value}/reports/${month.value}`,
    { format }, `community-${community.value}-${month.value}.${format}`));
  return section('月度数据集 Monthly data set (per user, per port, master meter)',
    h('div.form.inline', h('label', h('span', 'Community'), community), h('label', h('span', 'Month'), month),
      h('button.secondary', { type: 'button', onclick: () => get('csv') }, 'CSV'),
      h('button.secondary', { type: 'button', onclick: () => get('xlsx') }, 'XLSX')));
}
