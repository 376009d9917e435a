const wallet = require('../../utils/wallet')
const ops = require('../../utils/ops')
const validate = require('../../utils/validate')

test('ledger rows: sign by kind, channel in words', () => {
  const at = '2025-11-24T02:00:00Z'
  expect(wallet.txRow({ id: 1, kind: 'topup', channel: 'wechat', amount_fen: 2000, created_at: at }))
    .toMatchObject({ title: '充值', channel: '微信支付', amount: '+20.00', tone: 'in', when: '2025-11-24 10:00' })
  expect(wallet.txRow({ id: 2, kind: 'capture', amount_fen: 46 })).toMatchObject({ amount: '-0.46', tone: 'out' })
  expect(wallet.txRow({ id: 3, kind: 'hold', amount_fen: 5000 })).toMatchObject({ amount: '50.00', tone: 'neutral' })
  expect(wallet.txRow({ id: 4, kind: 'mystery', amount_fen: 1 })).toMatchObject({ title: 'mystery', amount: '0.01' })
})

test('account rows and the total of own accounts', () => {
  const accounts = [
    { id: 1, community_name: 'A', account_no: '13900000001', kind: 'resident', status: 'active',
      balance: { available_fen: 4954, held_fen: 2000 }, cards: [{ id: 5, card_uid: 'A1B2C3D4', status: 'blocked' }] },
    { id: 2, community_name: 'B', account_no: '13900000002', kind: 'resident', status: 'blocked',
      balance: { available_fen: 1 }, cards: [] },
    { id: 3, kind: 'temporary', balance: { available_fen: 999 } },
  ]
  expect(wallet.totalAvailable(accounts)).toBe(4955)
  expect(wallet.accountRow(accounts[0])).toMatchObject({ accountNo: '139****0001', available: '49.54',
    held: '20.00', statusText: '正常', cards: [{ id: 5, uid: '•••• C3D4', statusText: '已挂失' }] })
  expect(wallet.accountRow(accounts[1])).toMatchObject({ held: '', statusText: '已冻结' })
  expect(wallet.amountOptions([null, 500, 1050]).map((o) => o.label)).toEqual(['不限', '5.00 元', '10.50 元'])
})

test('pile rows count free, charging and faulty ports', () => {
  const pile = { id: 1, serial: 'P1', online: true, enabled: true, ports: [
    { id: 12, number: 2, status: 'charging' }, { id: 11, number: 1, status: 'idle' },
    { id: 13, number: 3, status: 'fault' }, { id: 14, number: 4, status: 'plugged' }] }
  const row = ops.pileRow(pile)
  expect(row.ports.map((p) => p.number)).toEqual([1, 2, 3, 4])
  expect(row).toMatchObject({ free: 2, charging: 1, faults: 1, total: 4, onlineText: '在线' })
  expect(ops.pileRow({ ...pile, online: false }).onlineText).toBe('离线')
  expect(ops.pileRow({ ...pile, enabled: false }).onlineText).toBe('已停用')
})

test('the monitoring overview and the daily report in words', () => {
  const view = ops.overviewView({ community_id: 5, piles: { online: 3, offline: 1, total: 4 },
    ports: { idle: 10, plugged: 2, charging: 5, full: 1, fault: 1, offline: 10, total: 29 },
    live_power_w: 1234, active_sessions: 5, open_incidents: { critical: 1, major: 0, minor: 2, total: 3 } })
  expect(view).toEqual({ pilesOnline: 3, pilesOffline: 1, free: 12, charging: 5, faults: 1,
    offlinePorts: 10, livePower: '1.23 kW', activeSessions: 5, incidents: 3, critical: 1 })
  expect(ops.overviewView(undefined)).toMatchObject({ pilesOnline: 0, free: 0, livePower: '0 W' })
  expect(ops.todayView({ from: '2025-11-24', totals: { revenue_fen: 12345, energy_wh: 6789,
    sessions: 12, topups_fen: 5000 } })).toEqual({ day: '2025-11-24', revenue: '123.45',
    energy: '6.79 度', sessions: 12, topups: '50.00' })
})

test('incident rows and request ids', () => {
  const row = ops.incidentRow({ id: 3, kind: 'smoke', severity: 'critical', state: 'open',
    pile_id: 1, pile_serial: 'P1', port_no: 2, opened_at: '2025-11-24T00:00:00Z', raised_count: 3, cut_off: true })
  expect(row).toMatchObject({ title: '烟雾报警', severityText: '紧急', stateText: '待处理',
    place: 'P1 · 2号插座', canAck: true, canResolve: false, times: 3, cutOff: true })
  expect(ops.incidentRow({ id: 4, kind: 'pile_offline', severity: 'major', state: 'acknowledged', pile_id: 9 }))
    .toMatchObject({ place: '#9', canAck: false, canResolve: true })
  expect(ops.incidentRow({ id: 5, kind: 'energy_loss', severity: 'major', state: 'resolved', pile_id: null }))
    .toMatchObject({ place: '小区总表', canAck: false, canResolve: false })
  const id = ops.requestId()
  expect(id).toMatch(/^[A-Za-z0-9_-]{8,64}$/)
  let t = 1000
  const fixed = () => 0.5
  const a = ops.requestId(fixed, () => t)
  t += 1
  expect(ops.requestId(fixed, () => t)).not.toBe(a)
})

test('form checks mirror the server', () => {
  expect(validate.phone('13900000001')).toBe('')
  expect(validate.phone('12900000001')).not.toBe('')
  expect(validate.pin('135790')).toBe('')
  expect(validate.pin('13579')).not.toBe('')
  expect(validate.newPin('135790', '246802', '246802')).toBe('')
  expect(validate.newPin('135790', '246802', '246803')).toMatch(/不一致/)
  expect(validate.newPin('135790', '135790', '135790')).toMatch(/相同/)
})
