/** Operator views: port states, pile summaries, today's figures, incidents in words. */
const fmt = require('./format')

const PORT_STATUS_TEXT = { idle: '空闲', plugged: '已插枪', charging: '充电中', full: '已充满',
  fault: '故障', offline: '离线' }

const SEVERITY_TEXT = { critical: '紧急', major: '严重', minor: '一般' }
const INCIDENT_STATUS_TEXT = { open: '待处理', acknowledged: '已确认', resolved: '已解决' }
// app/domain/safety.py AlarmKind and ConditionKind
const INCIDENT_KIND_TEXT = {
  over_temperature: '温度过高', overcurrent: '过流', overload: '过载', short_circuit: '短路',
  smoke: '烟雾报警', leakage: '漏电', plug_fault: '插头故障',
  pile_offline: '充电桩离线', meter_backwards: '电表读数倒退', abnormal_power: '功率异常',
  temperature_rising_fast: '温度上升过快', energy_without_session: '无订单耗电',
  energy_loss: '总表与插座电量差异过大（疑似窃电或漏电）',
}

function portRow(port) {
  return { id: port.id, number: port.number, status: port.status,
    statusText: PORT_STATUS_TEXT[port.status] || port.status,
    since: port.status_changed_at ? fmt.shortDateTime(port.status_changed_at) : '' }
}

function pileRow(pile) {
  const ports = (pile.ports || []).slice().sort((a, b) => a.number - b.number).map(portRow)
  const count = (status) => ports.filter((p) => p.status === status).length
  return {
    id: pile.id,
    serial: pile.serial,
    online: !!pile.online,
    enabled: pile.enabled !== false,
    onlineText: pile.enabled === false ? '已停用' : pile.online ? '在线' : '离线',
    lastSeen: pile.last_seen_at ? fmt.shortDateTime(pile.last_seen_at) : '',
    ports,
    free: count('idle') + count('plugged'),
    charging: count('charging'),
    faults: count('fault'),
    total: ports.length,
  }
}

/** The monitoring overview of one community (GET /monitoring/overview) in words. */
function overviewView(row) {
  const r = row || {}
  const piles = r.piles || {}
  const ports = r.ports || {}
  const incidents = r.open_incidents || {}
  return {
    pilesOnline: piles.online || 0,
    pilesOffline: piles.offline || 0,
    free: (ports.idle || 0) + (ports.plugged || 0),
    charging: ports.charging || 0,
    faults: ports.fault || 0,
    offlinePorts: ports.offline || 0,
    livePower: fmt.power(r.live_power_w || 0),
    activeSessions: r.active_sessions || 0,
    incidents: incidents.total || 0,
    critical: incidents.critical || 0,
  }
}

/** Today's figures from GET /reports/daily (one day): revenue and energy in words. */
function todayView(report) {
  const t = (report && report.totals) || {}
  return { day: (report && report.from) || '', revenue: fmt.yuan(t.revenue_fen || 0),
    energy: fmt.energy(t.energy_wh || 0), sessions: t.sessions || 0,
    topups: fmt.yuan(t.topups_fen || 0) }
}

function incidentRow(i) {
  return {
    id: i.id,
    title: INCIDENT_KIND_TEXT[i.kind] || i.kind,
    severity: i.severity,
    severityText: SEVERITY_TEXT[i.severity] || i.severity,
    state: i.state,
    stateText: INCIDENT_STATUS_TEXT[i.state] || i.state,
    place: i.pile_id ? `${i.pile_serial || `#${i.pile_id}`}${i.port_no ? ` · ${i.port_no}号插座` : ''}`
      : '小区总表',
    openedAt: fmt.shortDateTime(i.opened_at),
    lastAt: fmt.shortDateTime(i.last_raised_at || i.opened_at),
    times: i.raised_count || 1,
    cutOff: !!i.cut_off,
    // the server's rules: open → acknowledged → resolved, one step at a time
    canAck: i.state === 'open',
    canResolve: i.state === 'acknowledged',
  }
}

/** A fresh idempotency key for a cash top-up form (kept across retries of that form). */
function requestId(random = Math.random, now = Date.now) {
  const rand = Math.floor(random() * 0x7fffffff).toString(36)
  return `mp-${now().toString(36)}-${rand}`.slice(0, 64)
}

module.exports = { PORT_STATUS_TEXT, SEVERITY_TEXT, INCIDENT_STATUS_TEXT, INCIDENT_KIND_TEXT,
  portRow, pileRow, overviewView, todayView, incidentRow, requestId }
