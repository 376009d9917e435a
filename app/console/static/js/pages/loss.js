// Line loss (theft check): a community's master meter against the sum of its socket meters.
//
//   #/loss?community=ID&from=YYYY-MM-DD&to=YYYY-MM-DD
//
// Shows the daily series the API computes from the readings (master vs sockets, loss,
// loss ratio ‰ and the verdict each day gets) as a table and a line chart of the ratio,
// the stored loss checks, and "run check" for one day (platform admin, property operators).
// Without from/to the API picks its default range (the 14 days up to yesterday).
//
// Endpoints: GET /communities, GET /communities/{id}/loss, GET/POST
// /communities/{id}/loss-checks.

import * as api from '../api.js';
import {
  h, mount, act, table, form, section, stat, badge, kwh, permille, when, toast,
} from '../ui.js';
import { chart } from '../chart.js';

const rerender = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

const VERDICT_KIND = {
  ok: 'online', insufficient_data: 'offline', sockets_exceed_master: 'warning',
  above_threshold: 'critical', jump: 'critical',
};
const verdictBadge = (v) => badge(v, VERDICT_KIND[v] || 'warning');

export async function render(root, ctx, params) {
  const communities = await api.get('/communities', { limit: 200 });
  if (!communities.length) {
    mount(root, h('h1', '线损 Line loss'), h('p.empty', '没有小区 No communities.'));
    return;
  }
  const q = params.query;
  const id = Number(q.get('community')) || communities[0].id;
  const range = { from: q.get('from'), to: q.get('to') };
  const [series, checks] = await Promise.all([
    api.get(`/communities/${id}/loss`, range),
    api.get(`/communities/${id}/loss-checks`),
  ]);

  mount(root,
    h('h1', '线损 Line loss'),
    section('选择 Community and period', pickForm(communities, id, series)),
    section(`${series.from} → ${series.to}`, totals(series.total),
      chart({ kind: 'line', labels: series.days.map((d) => d.day),
        values: series.days.map((d) => d.loss_per_mille), title: '线损率 Loss ratio (%)',
        format: permille, id: 'loss-chart' })),
    section('每日 Per day', daysTable(series.days)),
    section('线损检查 Loss checks', ctx.manages() ? runCheckForm(id, series.to) : null, checksTable(checks)));
}

function pickForm(communities, id, series) {
  const f = form([
    { name: 'community', label: '小区 Community', type: 'select', value: id,
      options: communities.map((c) => [c.id, c.name]) },
    { name: 'from', label: '从 From', type: 'date', value: series.from },
    { name: 'to', label: '到 To', type: 'date', value: series.to },
  ], (v) => { location.hash = `#/loss?${new URLSearchParams(v)}`; },
  { submit: '查看 Show', id: 'loss-pick' });
  f.classList.add('inline');
  return f;
}

function totals(t) {
  return h('div.stats#loss-totals',
    stat('总表 master', kwh(t.master_wh)),
    stat('插座合计 sockets', kwh(t.sockets_wh)),
    stat('损耗 loss', kwh(t.loss_wh)),
    stat('线损率 loss ratio', permille(t.loss_per_mille)),
    stat('总表数据 master data', t.master_complete ? '完整 complete' : '不完整 incomplete',
      t.master_complete ? '' : 'warn'));
}

function daysTable(days) {
  return table(days, [
    ['日期 Day', (d) => d.day],
    ['总表 Master', (d) => kwh(d.master_wh)],
    ['插座 Sockets', (d) => kwh(d.sockets_wh)],
    ['损耗 Loss', (d) => kwh(d.loss_wh)],
    ['线损率 Ratio', (d) => permille(d.loss_per_mille)],
    ['结论 Verdict', (d) => verdictBadge(d.verdict)],
    ['说明 Reason', (d) => d.reason || '—'],
  ], { empty: '没有数据 No days.', rowAttrs: (d) => ({ dataset: { day: d.day, verdict: d.verdict } }) });
}

function checksTable(checks) {
  return table(checks, [
    ['时段 Period', (c) => `${when(c.period_start)} → ${when(c.period_end)}`],
    ['类型 Kind', (c) => c.kind],
    ['总表 Master', (c) => kwh(c.master_wh)],
    ['插座 Sockets', (c) => kwh(c.sockets_wh)],
    ['损耗 Loss', (c) => kwh(c.loss_wh)],
    ['线损率 Ratio', (c) => permille(c.loss_per_mille)],
    ['结论 Verdicts', (c) => c.verdicts.map((v) => [verdictBadge(v), ' '])],
    ['告警 Incident', (c) => (c.incident_id ? h('a', { href: `#/incidents?id=${c.incident_id}` }, `#${c.incident_id}`) : '—')],
    ['检查时间 Checked', (c) => when(c.checked_at)],
  ], { empty: '还没有检查 No checks yet.', rowAttrs: (c) => ({ dataset: { check: c.id } }) });
}

function runCheckForm(id, lastDay) {
  const f = form([
    { name: 'day', label: '日期 Day (local)', type: 'date', required: true, value: lastDay },
  ], async (v) => {
    const check = await act(() => api.post(`/communities/${id}/loss-checks`, v));
    toast(`已检查 Checked ${v.day}: ${check.verdicts.join(', ') || 'ok'}`);
    rerender();
  }, { submit: '运行检查 Run check', id: 'loss-check-form' });
  f.classList.add('inline');
  return h('div', { style: 'margin-bottom:12px' }, f);
}
