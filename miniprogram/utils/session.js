/**
 * A charging session as the pages show it: status words, what the live page and the
 * receipt display, whether polling goes on. Plain functions of the server's Session body
 * (GET /charging-sessions/{id}).
 */
const fmt = require('./format')
const errors = require('./errors')

const STATUS_TEXT = {
  pending_payment: '等待支付',
  starting: '正在启动',
  active: '充电中',
  stopping: '正在停止',
  settled: '已结束',
  failed: '未能启动',
}

const STOP_REASON_TEXT = {
  user: '手动停止',
  unplugged: '插头已拔出',
  full: '已充满',
  limit_reached: '已达到设定的金额或时长',
  balance: '余额不足，自动停止',
  operator: '物业远程停止',
  alarm: '安全告警，已断电',
  power_loss: '充电桩断电',
  pile_offline: '充电桩离线，按最后读数结算',
  start_failed: '未能启动',
}

const METHOD_TEXT = { app: '扫码', keypad: '按键', card: '刷卡', coin: '投币', visitor: '临时' }

function isOver(status) {
  return status === 'settled' || status === 'failed'
}

function isRunning(status) {
  return status === 'starting' || status === 'active' || status === 'stopping'
}

function canStop(status) {
  return status === 'starting' || status === 'active'
}

function failureText(reason) {
  return errors.reasonText(reason) || '充电桩未能启动，费用已退回'
}

/** What the live charging page shows. */
function liveView(s) {
  const status = s.status
  let remaining = '--'
  if (s.remaining_s != null) remaining = fmt.duration(s.remaining_s)
  else if (status === 'active') remaining = '计算中'
  return {
    status,
    statusText: STATUS_TEXT[status] || status,
    power: s.power_w == null ? '--' : fmt.power(s.power_w),
    energy: fmt.energy(s.energy_wh || 0),
    cost: fmt.yuan(s.cost_fen || 0),
    limit: s.max_amount_fen ? fmt.yuan(s.max_amount_fen) : '',
    elapsed: fmt.clock(s.elapsed_s || 0),
    remaining,
    balance: s.available_fen == null ? '' : fmt.yuan(s.available_fen),
    place: s.pile_serial ? `${s.pile_serial} · ${s.port_number}号插座` : '',
    canStop: canStop(status),
    stopping: status === 'stopping',
    over: isOver(status),
  }
}

/** What the receipt shows once the session is over. */
function receiptView(s) {
  const failed = s.status === 'failed'
  const refund = s.refund_fen || 0
  return {
    status: s.status,
    statusText: STATUS_TEXT[s.status] || s.status,
    failed,
    failureText: failed ? failureText(s.failure_reason) : '',
    stopReason: failed ? '' : (STOP_REASON_TEXT[s.stop_reason] || ''),
    energy: fmt.energy(s.energy_wh || 0),
    cost: fmt.yuan(s.cost_fen || 0),
    duration: fmt.duration(s.elapsed_s || 0),
    startedAt: fmt.dateTime(s.started_at),
    endedAt: fmt.dateTime(s.ended_at),
    place: s.pile_serial ? `${s.pile_serial} · ${s.port_number}号插座` : '',
    balance: s.available_fen == null ? '' : fmt.yuan(s.available_fen),
    hasRefund: refund > 0,
    refund: fmt.yuan(refund),
    prepaid: s.method === 'visitor' && s.max_amount_fen ? fmt.yuan(s.max_amount_fen) : '',
    sessionId: s.session_id,
    final: s.status === 'settled' || failed,
  }
}

/** A row of the history list (GET /charging-sessions). */
function historyRow(r) {
  const energy = r.end_energy_wh != null && r.start_energy_wh != null
    ? r.end_energy_wh - r.start_energy_wh : null
  return {
    id: r.id,
    sessionId: r.session_id,
    statusText: STATUS_TEXT[r.status] || r.status,
    method: METHOD_TEXT[r.method] || r.method,
    when: fmt.shortDateTime(r.started_at || r.ended_at),
    energy: energy == null ? '--' : fmt.energy(Math.max(energy, 0)),
    cost: fmt.yuan(r.cost_fen || 0),
    stopReason: r.status === 'failed' ? failureText(r.failure_reason)
      : (STOP_REASON_TEXT[r.stop_reason] || ''),
    running: isRunning(r.status),
  }
}

module.exports = { STATUS_TEXT, STOP_REASON_TEXT, METHOD_TEXT, isOver, isRunning, canStop,
  failureText, liveView, receiptView, historyRow }
