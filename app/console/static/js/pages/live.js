// Live monitoring: every community the user may see, updated by server-sent events
// (GET /monitoring/events): piles online/offline, ports by status, live power, sessions
// in progress, open incidents; and a feed of incidents as they open or change.

import * as api from '../api.js';
import { h, mount, stat, watts, when, badge, section } from '../ui.js';

const PORT_KEYS = ['idle', 'plugged', 'charging', 'full', 'fault', 'offline'];

function communityCard(c) {
  const crit = c.open_incidents.critical || 0;
  return h('article.card.community', { dataset: { community: c.community_id } },
    h('h2', h('a', { href: `#/community/${c.community_id}` }, c.name),
      crit ? ' ' : '', crit ? badge(`${crit} critical`, 'critical') : ''),
    h('div.stats',
      stat('桩在线 piles online', h('span.piles-online', `${c.piles.online}/${c.piles.total}`),
        c.piles.offline ? 'warn' : ''),
      stat('功率 live power', h('span.live-power', watts(c.live_power_w))),
      stat('充电中 sessions', h('span.active-sessions', c.active_sessions)),
      stat('未处理告警 open incidents', h('span.open-incidents', c.open_incidents.total),
        crit ? 'crit' : (c.open_incidents.total ? 'warn' : ''))),
    h('div.portbar', PORT_KEYS.map((k) => h(`span.badge.${k}`, { dataset: { status: k } },
      `${k} `, h(`b.ports-${k}`, c.ports[k] || 0)))));
}

/** A schematic map: communities placed by their coordinates (no map tiles offline). */
function map(communities) {
  const pts = communities.filter((c) => c.lat !== null && c.lng !== null);
  if (!pts.length) return h('p.muted', 'No community has coordinates yet.');
  const lats = pts.map((c) => c.lat); const lngs = pts.map((c) => c.lng);
  const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lngs), Math.max(...lngs)];
  const W = 360; const H = 220; const pad = 44; const padX = 80;
  const x = (lng) => padX + (lo1 === lo0 ? 0.5 : (lng - lo0) / (lo1 - lo0)) * (W - 2 * padX);
  const y = (lat) => H - pad - (la1 === la0 ? 0.5 : (lat - la0) / (la1 - la0)) * (H - 2 * pad);
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart map');
  pts.forEach((c) => {
    const a = document.createElementNS(NS, 'a');
    a.setAttribute('href', `#/community/${c.community_id}`);
    const dot = document.createElementNS(NS, 'circle');
    const r = 6 + Math.min(14, c.active_sessions * 2);
    dot.setAttribute('cx', x(c.lng)); dot.setAttribute('cy', y(c.lat)); dot.setAttribute('r', r);
    dot.setAttribute('fill', c.open_incidents.critical ? '#c53030' : (c.piles.offline ? '#b7791f' : '#2b8a6e'));
    dot.setAttribute('fill-opacity', '0.75');
    const label = document.createElementNS(NS, 'text');
    label.setAttribute('x', x(c.lng)); label.setAttribute('y', y(c.lat) - r - 4);
    label.setAttribute('text-anchor', 'middle'); label.setAttribute('class', 'axis');
    label.textContent = c.name;
    const title = document.createElementNS(NS, 'title');
    title.textContent = `${c.name}: ${watts(c.live_power_w)}, ${c.active_sessions} sessions`;
    dot.append(title);
    a.append(dot, label);
    svg.append(a);
  });
  return svg;
}

function incidentItem(i, fresh) {
  return h(`li${fresh ? '.fresh' : ''}`, { dataset: { incident: i.id, kind: i.kind } },
    badge(i.severity, i.severity), ' ', badge(i.state, i.state), ' ',
    h('a', { href: `#/incidents?id=${i.id}` }, h('b', i.kind)),
    ` · ${i.pile_serial || ''}${i.port_no ? ` port ${i.port_no}` : ''} · ${when(i.last_raised_at)}`,
    i.cut_off ? h('span.muted', ' · power cut') : '');
}

export async function render(root, ctx) {
  const totalsEl = h('div.stats#totals');
  const cards = h('div.grid#communities');
  const mapEl = h('div#map');
  const feed = h('ul.feed#incident-feed');
  const status = h('span.live-dot');
  const updated = h('span.muted#updated', 'connecting…');

  const recent = await api.get('/incidents', { state: 'open,acknowledged', limit: 20 }).catch(() => []);
  recent.forEach((i) => feed.append(incidentItem(i, false)));

  mount(root,
    h('h1', '实时监控 Live status ', status, updated),
    section('全部 All communities', totalsEl),
    h('div.row', section('地图 Map', mapEl), section('告警动态 Incident feed', feed)),
    cards);

  const show = (overview) => {
    const t = overview.totals;
    mount(totalsEl,
      stat('小区 communities', t.communities),
      stat('桩在线 piles online', h('span#total-online', `${t.piles.online}/${t.piles.online + t.piles.offline}`)),
      stat('充电中端口 ports charging', h('span#total-charging', t.ports.charging || 0)),
      stat('故障端口 ports fault', h('span#total-fault', t.ports.fault || 0), t.ports.fault ? 'crit' : ''),
      stat('总功率 live power', h('span#total-power', watts(t.live_power_w))),
      stat('充电会话 sessions', h('span#total-sessions', t.active_sessions)),
      stat('未处理告警 incidents', h('span#total-incidents',
        Object.values(t.open_incidents || {}).reduce((a, b) => a + b, 0))));
    mount(cards, overview.communities.map(communityCard));
    mount(mapEl, map(overview.communities));
    updated.textContent = ` updated ${when(overview.generated_at)}`;
  };

  const stop = api.events('/monitoring/events', {}, {
    overview: (o) => { status.classList.add('on'); show(o); },
    incident: (i) => {
      const old = feed.querySelector(`[data-incident="${i.id}"]`);
      const item = incidentItem(i, true);
      if (old) old.replaceWith(item); else feed.prepend(item);
    },
  });
  ctx.onLeave(stop);
}
