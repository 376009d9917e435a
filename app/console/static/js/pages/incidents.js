// Incidents: safety alarms, platform-detected conditions and loss findings, newest first,
// with acknowledge / resolve (who and when) and the notifications each one sent.
// GET /incidents, GET /incidents/{id}, POST .../acknowledge|resolve, GET .../notifications.

import * as api from '../api.js';
import { h, mount, section, table, when, badge, act, form } from '../ui.js';

const STATES = [['open,acknowledged', '未解决 unresolved'], ['open', 'open'],
  ['acknowledged', 'acknowledged'], ['resolved', 'resolved'], ['', 'all']];
const SEVERITIES = [['', 'any severity'], ['critical', 'critical'], ['warning', 'warning'], ['info', 'info']];

function where(i) {
  return `${i.pile_serial || `community ${i.community_id}`}${i.port_no ? ` · port ${i.port_no}` : ''}`;
}

async function detail(ctx, id, refresh) {
  const [i, notes] = await Promise.all([api.get(`/incidents/${id}`),
    api.get(`/incidents/${id}/notifications`).catch(() => [])]);
  const actions = [];
  if (ctx.manages() && i.state === 'open') {
    actions.push(form([{ name: 'note', label: '备注 note (optional)' }],
      async (v) => { await act(() => api.post(`/incidents/${id}/acknowledge`, v), '已确认 Acknowledged'); refresh(id); },
      { submit: '确认 Acknowledge', id: 'ack-form' }));
  }
  if (ctx.manages() && i.state !== 'resolved') {
    actions.push(form([{ name: 'note', label: '处理结果 resolution note' }],
      async (v) => { await act(() => api.post(`/incidents/${id}/resolve`, v), '已解决 Resolved'); refresh(id); },
      { submit: '解决 Resolve', id: 'resolve-form' }));
  }
  return section(`告警 #${i.id} ${i.kind}`,
    h('p', badge(i.severity, i.severity), ' ', h('span#incident-state', badge(i.state, i.state)),
      i.cut_off ? h('b.error', ' · 已断电 power cut') : ''),
    h('dl',
      h('dt', 'Where'), h('dd', where(i), i.pile_id ? [' · ', h('a', { href: `#/pile/${i.pile_id}` }, 'pile')] : ''),
      h('dt', 'Reason'), h('dd', i.reason || '—'),
      i.value !== null ? [h('dt', 'Value / threshold'), h('dd', `${i.value} / ${i.threshold ?? '—'}`)] : '',
      h('dt', 'Session'), h('dd', i.session_id || '—'),
      h('dt', 'Raised'), h('dd', `${when(i.opened_at)} (×${i.raised_count}, last ${when(i.last_raised_at)})`),
      h('dt', 'Acknowledged'), h('dd', i.acknowledged_at ? `${when(i.acknowledged_at)} by user ${i.acknowledged_by_user_id}${i.acknowledge_note ? ` — ${i.acknowledge_note}` : ''}` : '—'),
      h('dt', 'Resolved'), h('dd', i.resolved_at ? `${when(i.resolved_at)} by user ${i.resolved_by_user_id}${i.resolution_note ? ` — ${i.resolution_note}` : ''}` : '—'),
      h('dt', 'Escalation'), h('dd', `level ${i.notified_level}${i.next_escalation_at ? `, next ${when(i.next_escalation_at)}` : ''}`)),
    h('div.row', actions),
    h('h2', '通知 Notifications'),
    table(notes, [['Level', (n) => n.level], ['Channel', (n) => n.channel], ['To', (n) => n.recipient],
      ['Status', (n) => badge(n.status, n.status === 'sent' ? 'resolved' : n.status)], ['Sent', (n) => when(n.sent_at)],
      ['Error', (n) => n.last_error || '']], { empty: 'No notification sent.' }));
}

export async function render(root, ctx, params) {
  const q = params.query;
  const filters = { state: q.get('state') ?? 'open,acknowledged', severity: q.get('severity') || '',
    community_id: q.get('community_id') || '' };
  const [communities, list] = await Promise.all([
    api.get('/communities', { limit: 200 }),
    api.get('/incidents', { ...filters, limit: 100 })]);
  const detailEl = h('div#incident-detail');
  const go = (changes) => {
    const next = new URLSearchParams({ ...filters, ...changes });
    [...next.keys()].forEach((k) => { if (!next.get(k)) next.delete(k); });
    location.hash = `#/incidents?${next}`;
  };
  const show = async (id) => { mount(detailEl, await detail(ctx, id, () => render(root, ctx, params))); };
  const select = (name, options) => h('select', { name, onchange: (e) => go({ [name]: e.target.value, id: '' }) },
    options.map(([v, label]) => h('option', { value: v, selected: v === filters[name] }, label)));
  mount(root,
    h('h1', '告警 Incidents'),
    h('div.form.inline',
      h('label', h('span', 'State'), select('state', STATES)),
      h('label', h('span', 'Severity'), select('severity', SEVERITIES)),
      h('label', h('span', 'Community'), select('community_id',
        [['', 'all communities'], ...communities.map((c) => [String(c.id), c.name])]))),
    h('div.row',
      section(`${list.length} incidents`, table(list, [
        ['#', (i) => i.id], ['Severity', (i) => badge(i.severity, i.severity)],
        ['Kind', (i) => i.kind], ['Where', where], ['State', (i) => badge(i.state, i.state)],
        ['Last raised', (i) => when(i.last_raised_at)]],
      { empty: 'No incident matches.', rowAttrs: (i) => ({ class: 'clickable', dataset: { incident: i.id }, onclick: () => go({ id: i.id }) }) })),
      detailEl));
  const id = Number(q.get('id'));
  if (id) await show(id);
}
