// Places: communities, their buildings and sheds, piles and ports.
//
//   #/communities   the communities the user may see (filter by property company), and
//                   "new community" for the platform admin and property operators
//   #/community/ID  details + edit, buildings/sheds, piles, "register pile" (the MQTT
//                   password is shown once) and a live view of every port (5 s refresh)
//   #/pile/ID       details + edit, sessions in progress (remote stop), ports with their QR
//                   codes (SVG/PNG, printable labels) and the pile's history (status changes, alarms, incidents, sessions,
//                   energy per day)
//
// Endpoints: GET/POST /communities, GET/PATCH /communities/{id}, GET /property-companies,
// GET/POST /communities/{id}/buildings, PATCH/DELETE /buildings/{id}, GET/POST /piles,
// GET/PATCH /piles/{id}, GET /piles/{id}/history, GET /ports/{id}/qr.svg and qr.png,
// GET /charging-sessions?community_id&status and POST /charging-sessions/{id}/stop.
// Who may change what is the API's decision; forms are only hidden from read-only roles.

import * as api from '../api.js';
import {
  h, mount, act, table, form, section, stat, badge, yuan, kwh, watts, when, toast,
  STATUS_LABELS,
} from '../ui.js';
import { chart } from '../chart.js';

const PORT_STATUSES = ['idle', 'plugged', 'charging', 'full', 'fault', 'offline'];
const REFRESH_MS = 5000;

export async function render(root, ctx, params) {
  if (params.page === 'community') return communityPage(root, ctx, params.id);
  if (params.page === 'pile') return pilePage(root, ctx, params.id, params.query);
  return communitiesPage(root, ctx, params.query);
}

// ------------------------------------------------------------------ shared bits

/** Yuan as typed in a form field (no ¥ sign), from integer fen. */
const yuanText = (fen) => (fen === null || fen === undefined ? '' : yuan(fen).replace('¥', ''));

/** Render the current route again (the router stops this page's timers first). */
const rerender = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

const byId = (rows) => Object.fromEntries(rows.map((r) => [r.id, r]));

/** What a port tile shows: a pile that is offline cannot vouch for its ports' state. */
const portStatus = (pile, port) => (pile.online ? port.status : 'offline');

function portsSummary(pile) {
  const counts = {};
  pile.ports.forEach((p) => { const s = portStatus(pile, p); counts[s] = (counts[s] || 0) + 1; });
  return PORT_STATUSES.filter((s) => counts[s]).map((s) => [badge(`${s} ${counts[s]}`, s), ' ']);
}

/** Label/value rows without a header, for a record's details. */
const facts = (pairs) => h('table.facts', h('tbody', pairs.map(([k, v]) => h('tr', h('th', k), h('td', v)))));

/** A long table in a box of its own height, so one busy pile does not bury the page. */
const scroll = (el) => h('div.scroll', el);

/** Coordinates without float noise (30.261000000000003 → 30.261). */
const coord = (v) => (v === null || v === undefined ? v : Number(v.toFixed(6)));
const coords = (x) => (x.lat === null ? '—' : `${coord(x.lat)}, ${coord(x.lng)}`);

const noPrint = (el) => { el.classList.add('no-print'); return el; };
const inline = (f) => { f.classList.add('inline'); return f; };

const onlineBadge = (pile) => (pile.online ? badge('在线 online', 'online') : badge('离线 offline', 'offline'));

function buildingOptions(buildings, none = '— 无 none —') {
  return [['none', none], ...buildings.map((b) => [b.id, `${b.name} (${b.kind})`])];
}

/** A select value of 'none' means "no building"; an id string becomes a number. */
const buildingValue = (v) => (v === 'none' ? null : Number(v));

// ------------------------------------------------------------------ #/communities

async function communitiesPage(root, ctx, query) {
  const companyId = query.get('property_company_id') || '';
  const [companies, communities, piles] = await Promise.all([
    api.get('/property-companies', { limit: 200 }),
    api.get('/communities', { property_company_id: companyId, limit: 200 }),
    api.get('/piles', { limit: 200 }),
  ]);
  const companyById = byId(companies);
  const pileCount = {};
  piles.forEach((p) => { pileCount[p.community_id] = (pileCount[p.community_id] || 0) + 1; });

  mount(root,
    h('h1', '小区 Communities'),
    section('小区列表 Communities',
      companies.length > 1 ? companyFilter(companies, companyId) : null,
      communitiesTable(communities, companyById, pileCount)),
    ctx.manages() ? section('新建小区 New community', newCommunityForm(ctx, companies)) : null);
}

function companyFilter(companies, selected) {
  const select = h('select#company-filter', {
    onchange: () => { location.hash = select.value ? `#/communities?property_company_id=${select.value}` : '#/communities'; },
  }, h('option', { value: '' }, '全部 All property companies'),
  companies.map((c) => h('option', { value: c.id, selected: String(c.id) === selected }, c.name)));
  return h('div.form.inline.filters', h('label', h('span', '物业公司 Property company'), select));
}

function communitiesTable(communities, companyById, pileCount) {
  return table(communities, [
    ['名称 Name', (c) => h('a', { href: `#/community/${c.id}` }, c.name)],
    ['地址 Address', (c) => c.address || '—'],
    ['物业 Property company', (c) => (companyById[c.property_company_id] || {}).name || `#${c.property_company_id}`],
    ['充电桩 Piles', (c) => pileCount[c.id] || 0],
    ['', (c) => h('a', { href: `#/community/${c.id}` }, '查看 Open →')],
  ], { empty: '没有小区 No communities.', rowAttrs: (c) => ({ dataset: { community: c.id } }) });
}

const communityFields = (c = {}) => [
  { name: 'name', label: '名称 Name', required: !c.id, value: c.name },
  { name: 'address', label: '地址 Address', value: c.address },
  { name: 'lat', label: '纬度 Latitude', type: 'number', value: coord(c.lat) },
  { name: 'lng', label: '经度 Longitude', type: 'number', value: coord(c.lng) },
  { name: 'master_meter_serial', label: '总表编号 Master meter serial', value: c.master_meter_serial },
  { name: 'min_start_balance_fen', label: '最低启动余额 Min start balance (¥)', type: 'yuan',
    value: yuanText(c.min_start_balance_fen), placeholder: '1.00' },
];

function newCommunityForm(ctx, companies) {
  const fields = [
    { name: 'property_company_id', label: '物业公司 Property company', type: 'select', required: true,
      options: companies.map((c) => [c.id, c.name]), value: ctx.me.property_company_id },
    ...communityFields(),
  ];
  return form(fields, async (v) => {
    const created = await act(() => api.post('/communities',
      { ...v, property_company_id: Number(v.property_company_id) }), '小区已创建 Community created');
    location.hash = `#/community/${created.id}`;
  }, { submit: '创建 Create', id: 'new-community-form' });
}

// ------------------------------------------------------------------ #/community/ID

async function communityPage(root, ctx, id) {
  const [community, buildings, piles] = await Promise.all([
    api.get(`/communities/${id}`),
    api.get(`/communities/${id}/buildings`),
    api.get('/piles', { community_id: id, limit: 200 }),
  ]);
  const company = await api.get(`/property-companies/${community.property_company_id}`).catch(() => null);
  const reload = rerender;
  const pilesBox = h('div#piles');
  const live = h('div#live-ports');
  const updated = h('span.muted#live-updated');

  const showPiles = (list) => {
    mount(pilesBox, pilesTable(list, byId(buildings)));
    mount(live, list.map(livePile));
    updated.textContent = ` updated ${when(new Date().toISOString())}`;
  };
  showPiles(piles);

  mount(root,
    h('h1', h('a', { href: '#/communities' }, '小区 Communities'), ' / ', community.name),
    h('div.row',
      section('概况 Details', communityDetails(community, company, buildings, piles)),
      ctx.manages() ? section('修改 Edit', editCommunityForm(community, reload)) : null),
    section('楼栋与车棚 Buildings & sheds', buildingsView(ctx, id, buildings, piles, reload)),
    section('充电桩 Piles', pilesBox),
    ctx.manages() ? section('登记充电桩 Register a pile', registerPileForm(id, buildings, reload)) : null,
    section(h('span', '实时端口 Live ports', updated), live));

  const timer = setInterval(async () => {
    try {
      showPiles(await api.get('/piles', { community_id: id, limit: 200 }));
    } catch {
      updated.textContent = ' update failed, retrying…';
    }
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
}

function communityDetails(c, company, buildings, piles) {
  const online = piles.filter((p) => p.online).length;
  return [
    h('div.stats',
      stat('充电桩在线 piles online', `${online}/${piles.length}`, online < piles.length ? 'warn' : ''),
      stat('端口 ports', piles.reduce((n, p) => n + p.ports.length, 0)),
      stat('楼栋/车棚 buildings', buildings.length),
      stat('最低启动余额 min start balance', yuan(c.min_start_balance_fen))),
    facts([
      ['物业公司 Property company', company ? company.name : `#${c.property_company_id}`],
      ['地址 Address', c.address || '—'],
      ['坐标 Coordinates', coords(c)],
      ['总表 Master meter', c.master_meter_serial || '—'],
      ['时区 Time zone', c.timezone],
    ]),
    h('p', h('a', { href: `#/loss?community=${c.id}` }, '线损 Loss →'), ' ',
      h('a', { href: `#/accounts?community=${c.id}` }, '充电账户 Accounts →')),
  ];
}

function editCommunityForm(c, reload) {
  return form(communityFields(c), async (v) => {
    await act(() => api.patch(`/communities/${c.id}`, v), '已保存 Saved');
    reload();
  }, { submit: '保存 Save', id: 'community-form' });
}

// ------------------------------------------------------------------ buildings

function buildingsView(ctx, communityId, buildings, piles, reload) {
  const inUse = {};
  piles.forEach((p) => { if (p.building_id) inUse[p.building_id] = (inUse[p.building_id] || 0) + 1; });
  const columns = [
    ['名称 Name', (b) => b.name],
    ['类型 Kind', (b) => (b.kind === 'shed' ? '车棚 shed' : '楼栋 building')],
    ['充电桩 Piles', (b) => inUse[b.id] || 0],
  ];
  if (ctx.manages()) columns.push(['', (b) => buildingActions(b, reload)]);
  return [
    table(buildings, columns, { empty: '还没有楼栋或车棚 No buildings or sheds yet.',
      rowAttrs: (b) => ({ dataset: { building: b.id } }) }),
    ctx.manages() ? h('div', { style: 'margin-top:12px' }, inline(form([
      { name: 'name', label: '名称 Name', required: true },
      { name: 'kind', label: '类型 Kind', type: 'select', value: 'shed',
        options: [['shed', '车棚 shed'], ['building', '楼栋 building']] },
    ], async (v) => {
      await act(() => api.post(`/communities/${communityId}/buildings`, v), '已添加 Added');
      reload();
    }, { submit: '添加楼栋/车棚 Add', id: 'building-form' }))) : null,
  ];
}

function buildingActions(b, reload) {
  const rename = async () => {
    const name = window.prompt('新名称 New name', b.name);
    if (!name || name === b.name) return;
    await act(() => api.patch(`/buildings/${b.id}`, { name }), '已改名 Renamed').catch(() => null);
    reload();
  };
  const remove = async () => {
    if (!window.confirm(`删除 Delete "${b.name}"?`)) return;
    await act(() => api.del(`/buildings/${b.id}`), '已删除 Deleted').catch(() => null);
    reload();
  };
  return h('div.actions',
    h('button.secondary', { type: 'button', onclick: rename }, '改名 Rename'),
    h('button.danger', { type: 'button', onclick: remove }, '删除 Delete'));
}

// ------------------------------------------------------------------ piles

function pilesTable(piles, buildingById) {
  return table(piles, [
    ['编号 Serial', (p) => h('a', { href: `#/pile/${p.id}` }, p.serial)],
    ['型号 Model', (p) => p.model || '—'],
    ['位置 Building', (p) => (buildingById[p.building_id] || {}).name || '—'],
    ['状态 Online', (p) => [onlineBadge(p), p.enabled ? '' : [' ', badge('停用 disabled', 'fault')]]],
    ['端口 Ports', (p) => portsSummary(p)],
    ['最后通信 Last seen', (p) => when(p.last_seen_at)],
  ], { empty: '还没有充电桩 No piles yet.',
    rowAttrs: (p) => ({ class: 'clickable', dataset: { pile: p.id },
      onclick: (e) => { if (e.target.tagName !== 'A') location.hash = `#/pile/${p.id}`; } }) });
}

function registerPileForm(communityId, buildings, reload) {
  const out = h('div#pile-secret');
  const f = form([
    { name: 'serial', label: '编号 Serial', required: true, placeholder: 'P0007' },
    { name: 'model', label: '型号 Model', placeholder: 'EB-10' },
    { name: 'port_count', label: '端口数 Ports', type: 'number', required: true, value: 10, step: 1 },
    { name: 'building_id', label: '楼栋/车棚 Building', type: 'select', options: buildingOptions(buildings) },
  ], async (v) => {
    const body = { ...v, community_id: communityId, building_id: buildingValue(v.building_id ?? 'none') };
    if (body.building_id === null) delete body.building_id;
    const pile = await act(() => api.post('/piles', body), '充电桩已登记 Pile registered');
    mount(out, secretBox(pile, reload));
  }, { submit: '登记 Register', id: 'register-pile-form' });
  return [f, out];
}

/** The MQTT credentials, shown once: the API keeps only a hash of the password. */
function secretBox(pile, reload) {
  return h('div', { style: 'margin-top:12px' },
    h('p.error', h('b', '⚠ 仅显示一次 Shown only once: '),
      'copy the MQTT password into the pile\'s configuration now; it cannot be shown again.'),
    h('div.secret#mqtt-secret',
      h('div', 'MQTT username: ', h('b', pile.mqtt_username)),
      h('div', 'MQTT password: ', h('b#mqtt-password', pile.mqtt_password))),
    h('div.actions', { style: 'margin-top:8px' },
      h('button.secondary', { type: 'button', onclick: () => copy(pile.mqtt_password) }, '复制 Copy'),
      h('a', { href: `#/pile/${pile.id}` }, `${pile.serial} →`),
      h('button.secondary', { type: 'button', onclick: reload }, '完成 Done (hide)')));
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast('已复制 Copied'); } catch {
    toast('Cannot copy here; select the text and copy it.', 'error');
  }
}

// ------------------------------------------------------------------ live ports

function livePile(pile) {
  return h('div.live-pile', { dataset: { pile: pile.id } },
    h('h3', h('a', { href: `#/pile/${pile.id}` }, pile.serial), ' ', onlineBadge(pile)),
    h('div.ports', pile.ports.map((port) => portTile(pile, port))));
}

function portTile(pile, port) {
  const status = portStatus(pile, port);
  const power = status === 'charging' ? watts(port.power_w) : '';
  return h(`div.port.${status}`, { dataset: { portId: port.id, status }, title: port.public_code },
    h('div.no', `#${port.number}`),
    badge(STATUS_LABELS[status] || status, status),
    h('div.power', power || '\u00a0'));
}

// ------------------------------------------------------------------ #/pile/ID

async function pilePage(root, ctx, id, query) {
  const pile = await api.get(`/piles/${id}`);
  const [community, buildings] = await Promise.all([
    api.get(`/communities/${pile.community_id}`),
    api.get(`/communities/${pile.community_id}/buildings`),
  ]);
  const urls = [];
  ctx.onLeave(() => urls.forEach((u) => URL.revokeObjectURL(u)));
  const historyBox = h('div#history', h('p.loading', 'Loading…'));

  mount(root,
    h('h1.no-print', h('a', { href: '#/communities' }, '小区 Communities'), ' / ',
      h('a', { href: `#/community/${community.id}` }, community.name), ' / ', pile.serial),
    h('div.row.no-print',
      section('概况 Details', pileDetails(pile, community, buildings)),
      ctx.manages() ? section('修改 Edit', editPileForm(pile, buildings, rerender)) : null),
    noPrint(section('端口 Ports', portsTable(pile))),
    noPrint(section('充电中 Charging now', await activeSessions(ctx, pile))),
    qrSection(pile, community, urls),
    noPrint(section('历史 History', historyBox)));

  await showHistory(historyBox, pile, query);
}

/** The pile's sessions in progress; staff who manage the community may stop one remotely
 * (POST /charging-sessions/{id}/stop: the pile cuts power, its end report settles the bill). */
async function activeSessions(ctx, pile) {
  const open = (await Promise.all(['starting', 'active'].map((status) => api.get('/charging-sessions',
    { community_id: pile.community_id, status, limit: 200 })))).flat()
    .filter((s) => s.pile_id === pile.id);
  const portNo = Object.fromEntries(pile.ports.map((p) => [p.id, p.number]));
  const stop = async (s) => {
    if (!window.confirm(`停止 ${portNo[s.port_id]} 号口的充电？ Stop charging on port ${portNo[s.port_id]}?`)) return;
    await act(() => api.post(`/charging-sessions/${s.session_id}/stop`), '已发送停止指令 Stop sent to the pile');
    setTimeout(rerender, 1500);
  };
  return table(open.sort((a, b) => portNo[a.port_id] - portNo[b.port_id]), [
    ['端口 Port', (s) => `#${portNo[s.port_id]}`], ['会话 Session', (s) => h('code', s.session_id)],
    ['方式 Method', (s) => s.method], ['状态 Status', (s) => badge(s.status, s.status === 'active' ? 'charging' : s.status)],
    ['开始 Started', (s) => when(s.started_at)], ['费用 Cost so far', (s) => yuan(s.cost_fen)],
    ['', (s) => (ctx.manages() ? h('button.danger', { type: 'button', dataset: { stop: s.session_id },
      onclick: () => stop(s).catch(() => null) }, '远程停止 Stop') : '')],
  ], { empty: '没有正在充电的端口 No port is charging.' });
}

function pileDetails(p, community, buildings) {
  const building = buildings.find((b) => b.id === p.building_id);
  return [
    h('div.stats',
      stat('状态 status', onlineBadge(p)),
      stat('启用 enabled', p.enabled ? '是 yes' : '否 no', p.enabled ? '' : 'warn'),
      stat('端口 ports', p.port_count)),
    portsSummary(p),
    facts([
      ['小区 Community', h('a', { href: `#/community/${community.id}` }, community.name)],
      ['楼栋/车棚 Building', building ? building.name : '—'],
      ['型号 Model', p.model || '—'],
      ['固件 Firmware', p.firmware || '—'],
      ['坐标 Coordinates', coords(p)],
      ['最后通信 Last seen', when(p.last_seen_at)],
    ]),
  ];
}

function editPileForm(p, buildings, reload) {
  return form([
    { name: 'building_id', label: '楼栋/车棚 Building', type: 'select', options: buildingOptions(buildings),
      value: p.building_id ?? 'none' },
    { name: 'model', label: '型号 Model', value: p.model },
    { name: 'enabled', label: '启用 Enabled', type: 'select', value: String(p.enabled),
      options: [['true', '启用 enabled'], ['false', '停用 disabled']] },
    { name: 'lat', label: '纬度 Latitude', type: 'number', value: coord(p.lat) },
    { name: 'lng', label: '经度 Longitude', type: 'number', value: coord(p.lng) },
  ], async (v) => {
    const body = { ...v, enabled: v.enabled === 'true', building_id: buildingValue(v.building_id) };
    await act(() => api.patch(`/piles/${p.id}`, body), '已保存 Saved');
    reload();
  }, { submit: '保存 Save', id: 'pile-form' });
}

function portsTable(pile) {
  return table(pile.ports, [
    ['端口 Port', (p) => `#${p.number}`],
    ['状态 Status', (p) => badge(STATUS_LABELS[portStatus(pile, p)], portStatus(pile, p))],
    ['功率 Power', (p) => (portStatus(pile, p) === 'charging' ? watts(p.power_w) : '—')],
    ['状态时间 Since', (p) => when(p.status_changed_at)],
    ['扫码编号 Public code', (p) => h('code', p.public_code)],
    ['二维码 QR', (p) => qrLinks(pile, p)],
  ], { rowAttrs: (p) => ({ dataset: { portId: p.id, status: portStatus(pile, p) } }) });
}

function qrLinks(pile, port) {
  const name = `${pile.serial}-${port.number}-${port.public_code}`;
  const dl = (ext) => h('button.secondary', {
    type: 'button',
    onclick: () => act(() => api.download(`/ports/${port.id}/qr.${ext}`, {}, `${name}.${ext}`))
      .catch(() => null),
  }, ext.toUpperCase());
  return h('div.actions', dl('svg'), dl('png'));
}

/** One label per port: the QR image (fetched with the JWT) and what to read on it. */
function qrSection(pile, community, urls) {
  const labels = pile.ports.map((port) => {
    const img = h('img', { alt: `QR ${pile.serial} #${port.number}`, dataset: { portId: port.id } });
    api.objectUrl(`/ports/${port.id}/qr.svg`).then((u) => { urls.push(u); img.src = u; })
      .catch(() => { img.alt = 'QR unavailable'; });
    return h('figure', img, h('figcaption',
      h('div', h('b', `${pile.serial} · #${port.number}`)),
      h('div', h('code', port.public_code)),
      h('div.muted', community.name)));
  });
  return h('section.card#qr-labels',
    h('h2.no-print', '二维码标签 QR labels ',
      h('button', { type: 'button', id: 'print-qr', onclick: () => window.print() }, '打印 Print QR labels')),
    h('p.muted.no-print', 'Printing shows the labels only; download single codes as SVG or PNG in the ports table.'),
    h('div.qr', labels));
}

// ------------------------------------------------------------------ history

/** The period shown (the API's default when the URL names none); changing it moves the URL. */
function historyRange(pileId, hist) {
  const f = form([
    { name: 'from', label: '从 From', type: 'date', value: hist.from },
    { name: 'to', label: '到 To', type: 'date', value: hist.to },
  ], (v) => {
    const q = new URLSearchParams(v).toString();
    location.hash = `#/pile/${pileId}${q ? `?${q}` : ''}`;
  }, { submit: '查看 Show', id: 'history-range' });
  f.classList.add('inline');
  return f;
}

async function showHistory(box, pile, query) {
  const hist = await act(() => api.get(`/piles/${pile.id}/history`,
    { from: query.get('from'), to: query.get('to') })).catch(() => null);
  if (!hist) { mount(box, h('p.error', '无法显示历史 Cannot show the history (see the message).')); return; }
  const portNo = Object.fromEntries(pile.ports.map((p) => [p.id, `#${p.number}`]));
  const port = (r) => (r.port_id ? portNo[r.port_id] || r.port_id : '—');
  mount(box,
    historyRange(pile.id, hist),
    chart({ kind: 'bar', labels: hist.energy_per_day.map((d) => d.day),
      values: hist.energy_per_day.map((d) => d.energy_wh), title: '每日电量 Socket energy per day', format: kwh,
      id: 'energy-chart' }),
    h('h3', `状态变化 Status changes (${hist.status_changes.length})`),
    scroll(table(hist.status_changes, [
      ['时间 At', (e) => when(e.at)], ['事件 Event', (e) => badge(e.kind, e.kind)],
      ['端口 Port', port], ['详情 Detail', (e) => h('code', detailText(e.detail))],
    ], { empty: '无 None.' })),
    h('h3', `报警 Alarms (${hist.alarms.length})`),
    scroll(table(hist.alarms, [
      ['时间 At', (a) => when(a.at)], ['端口 Port', port], ['类型 Kind', (a) => a.kind],
      ['级别 Severity', (a) => badge(a.severity, a.severity)], ['状态 State', (a) => a.state],
      ['值 Value', (a) => (a.value === null ? '—' : `${a.value} / ${a.threshold ?? '—'}`)],
      ['断电 Cut off', (a) => (a.cut_off ? '是 yes' : '')],
    ], { empty: '无 None.' })),
    h('h3', `告警 Incidents (${hist.incidents.length})`),
    scroll(table(hist.incidents, [
      ['#', (i) => h('a', { href: `#/incidents?id=${i.id}` }, i.id)], ['类型 Kind', (i) => i.kind],
      ['级别 Severity', (i) => badge(i.severity, i.severity)], ['状态 State', (i) => badge(i.state, i.state)],
      ['开始 Opened', (i) => when(i.opened_at)], ['原因 Reason', (i) => i.reason],
    ], { empty: '无 None.' })),
    h('h3', `充电记录 Sessions (${hist.sessions.length})`),
    scroll(table(hist.sessions, [
      ['会话 Session', (s) => h('code', s.session_id)], ['端口 Port', port],
      ['方式 Method', (s) => s.method], ['状态 Status', (s) => badge(s.status, s.status)],
      ['开始 Started', (s) => when(s.started_at)], ['结束 Ended', (s) => when(s.ended_at)],
      ['电量 Energy', (s) => kwh(s.energy_wh)], ['费用 Cost', (s) => yuan(s.cost_fen)],
      ['停止原因 Stop reason', (s) => s.stop_reason || '—'],
    ], { empty: '无 None.' })));
}

function detailText(detail) {
  return Object.entries(detail || {}).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
}
