const session = require('../../utils/session')

const live = {
  session_id: 'S0123456789abcdef', status: 'active', method: 'app', pile_serial: 'P0001',
  port_number: 2, power_w: 183, energy_wh: 456, cost_fen: 46, max_amount_fen: 2000,
  elapsed_s: 1805, remaining_s: 5400, available_fen: 3000, refund_fen: null,
}

test('the live view', () => {
  const v = session.liveView(live)
  expect(v).toMatchObject({
    statusText: '充电中', power: '183 W', energy: '0.46 度', cost: '0.46', limit: '20.00',
    elapsed: '00:30:05', remaining: '1小时30分', balance: '30.00', place: 'P0001 · 2号插座',
    canStop: true, stopping: false, over: false,
  })
})

test('live view edge cases: starting, unknown remaining, stopping', () => {
  expect(session.liveView({ status: 'starting', power_w: null, remaining_s: null }))
    .toMatchObject({ power: '--', remaining: '--', canStop: true, energy: '0.00 度', cost: '0.00' })
  expect(session.liveView({ ...live, remaining_s: null }).remaining).toBe('计算中')
  expect(session.liveView({ ...live, status: 'stopping' })).toMatchObject({ canStop: false, stopping: true })
  expect(session.liveView({ ...live, status: 'settled' }).over).toBe(true)
})

test('the receipt: resident', () => {
  const r = session.receiptView({ ...live, status: 'settled', stop_reason: 'user',
    started_at: '2025-11-24T10:00:00Z', ended_at: '2025-11-24T10:30:05Z' })
  expect(r).toMatchObject({ failed: false, stopReason: '手动停止', cost: '0.46',
    duration: '30分05秒', startedAt: '2025-11-24 18:00', endedAt: '2025-11-24 18:30',
    hasRefund: false, prepaid: '', final: true, balance: '30.00' })
})

test('the receipt: a visitor sees the prepayment and the refund', () => {
  const r = session.receiptView({ ...live, status: 'settled', method: 'visitor', max_amount_fen: 500,
    cost_fen: 123, refund_fen: 377, available_fen: null, stop_reason: 'unplugged' })
  expect(r).toMatchObject({ prepaid: '5.00', hasRefund: true, refund: '3.77', cost: '1.23',
    balance: '', stopReason: '插头已拔出' })
})

test('the receipt: a start that failed says why', () => {
  const r = session.receiptView({ status: 'failed', failure_reason: 'nack:not_plugged' })
  expect(r).toMatchObject({ failed: true, failureText: '请先插好插头，再扫码充电', stopReason: '' })
  expect(session.receiptView({ status: 'failed', failure_reason: 'weird' }).failureText)
    .toBe('充电桩未能启动，费用已退回')
})

test('status predicates', () => {
  expect(['settled', 'failed'].every(session.isOver)).toBe(true)
  expect(['starting', 'active', 'stopping'].some(session.isOver)).toBe(false)
  expect(session.isRunning('stopping')).toBe(true)
  expect(session.canStop('stopping')).toBe(false)
})

test('history rows', () => {
  const row = session.historyRow({ id: 9, session_id: 'S1', status: 'settled', method: 'card',
    start_energy_wh: 1000, end_energy_wh: 1750, cost_fen: 75, started_at: '2025-11-24T10:00:00Z',
    stop_reason: 'full' })
  expect(row).toMatchObject({ energy: '0.75 度', cost: '0.75', method: '刷卡', stopReason: '已充满',
    when: '11-24 18:00', running: false })
  expect(session.historyRow({ id: 1, status: 'active', method: 'app', cost_fen: 0 }))
    .toMatchObject({ energy: '--', running: true })
})
