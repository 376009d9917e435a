/** @jest-environment jsdom */
const { render, serve, settle, text, tap, simulate } = require('../helpers/render')

const TODAY = new Date().toISOString()
const PILE = { id: 4, community_id: 5, serial: 'P0001', model: 'X', online: true, enabled: true,
  lat: 30, lng: 120, last_seen_at: TODAY, port_count: 3, ports: [
    { id: 41, number: 1, status: 'charging', public_code: 'AAAA1111', status_changed_at: TODAY },
    { id: 42, number: 2, status: 'idle', public_code: 'AAAA2222', status_changed_at: TODAY },
    { id: 43, number: 3, status: 'fault', public_code: 'AAAA3333', status_changed_at: TODAY }] }
const ACTIVE = { id: 90, session_id: 'S0000000000000090', status: 'active', method: 'app',
  pile_id: 4, port_id: 41, cost_fen: 123, started_at: TODAY }

function staff(role = 'property_operator') {
  global.wx.storage['evc.mode'] = 'staff'
  global.wx.storage['evc.tokens'].role = role
}

const OVERVIEW = { generated_at: TODAY, communities: [{ community_id: 5, name: '阳光小区',
  property_company_id: 1, piles: { online: 1, offline: 1, total: 2 },
  ports: { idle: 1, plugged: 0, charging: 1, full: 0, fault: 1, offline: 0, total: 3 },
  live_power_w: 183, active_sessions: 1, open_incidents: { critical: 1, major: 0, minor: 1, total: 2 } }],
  totals: {} }
const REPORT = { granularity: 'day', from: '2025-11-24', to: '2025-11-24', rows: [],
  totals: { sessions: 2, energy_wh: 2250, revenue_fen: 225, topups_fen: 5000 }, chart: {} }

test("operators' home: today's revenue and energy, piles and ports, incidents", async () => {
  const wx = serve({
    'GET /api/v1/auth/me': { id: 2, role: 'property_operator', property_company_id: 1 },
    'GET /api/v1/communities': [{ id: 5, name: '阳光小区' }, { id: 6, name: '月亮小区' }],
    'GET /api/v1/monitoring/overview': OVERVIEW,
    'GET /api/v1/reports/daily': REPORT,
  }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/index/index')
  await page.instance.onShow()
  await settle()
  const shown = text(page)
  expect(shown).toContain('阳光小区')
  expect(shown).toContain('今日（2025-11-24）')
  expect(shown).toContain('2.25元')
  expect(shown).toContain('2.25 度')
  expect(shown).toContain('50.00元')
  expect(shown).toContain('1 / 1') // online / offline piles
  expect(shown).toContain('183 W')
  expect(shown).toContain('未解决 2')
  expect(shown).toContain('紧急 1')
  expect(shown).toContain('现金充值')
  const report = wx.calls.requests.find((r) => r.url.includes('/reports/daily'))
  const day = require('../../utils/format').beijingDay(Date.now())
  expect(report.url).toContain(`from=${day}&to=${day}&community_id=5`)
  expect(wx.calls.requests.find((r) => r.url.includes('/monitoring/overview')).url).toContain('community_id=5')
})

test('a power-company user sees the figures but cannot top up', async () => {
  serve({
    'GET /api/v1/auth/me': { id: 3, role: 'power_company' },
    'GET /api/v1/communities': [{ id: 5, name: '阳光小区' }],
    'GET /api/v1/monitoring/overview': OVERVIEW,
    'GET /api/v1/reports/daily': REPORT,
  }, { role: 'power_company' })
  staff('power_company')
  const page = render('pages/ops/index/index')
  await page.instance.onShow()
  await settle()
  expect(text(page)).not.toContain('现金充值')
  expect(text(page)).toContain('2.25元')
})

test('not logged in as staff: to the log-in page', async () => {
  const wx = serve({})
  const page = render('pages/ops/index/index')
  await page.instance.onShow()
  expect(wx.calls.redirectTo).toEqual(['/pages/ops/login/login'])
})

test('a pile: ports with their sessions, remote stop', async () => {
  const wx = serve({
    'GET /api/v1/piles/4': PILE,
    'GET /api/v1/charging-sessions': [ACTIVE, { ...ACTIVE, id: 91, pile_id: 99, port_id: 991 }],
    'POST /api/v1/charging-sessions/S0000000000000090/stop': (o) => ({ statusCode: 202, data: { ...ACTIVE, status: 'stopping' } }),
  }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/pile/pile')
  await page.instance.onLoad({ pile_id: '4' })
  await settle()
  const shown = text(page)
  expect(shown).toContain('1 号插座')
  expect(shown).toContain('充电中')
  expect(shown).toContain('故障')
  expect(shown).toContain('订单 S0000000000000090 · 已消费 1.23 元')
  expect(page.querySelectorAll('.stop')).toHaveLength(1)
  await tap(page, '.stop')
  expect(wx.calls.modals[0].content).toContain('1 号插座')
  expect(wx.calls.requests.some((r) => r.method === 'POST' && r.url.endsWith('/S0000000000000090/stop'))).toBe(true)
  expect(wx.calls.toasts).toContain('已发送停止指令')
})

test('piles list with port states', async () => {
  serve({ 'GET /api/v1/piles': [PILE] }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/piles/piles')
  page.instance.onLoad({ community_id: '5' })
  page.instance.onShow()
  await settle()
  expect(text(page)).toContain('P0001')
  expect(text(page)).toContain('空闲 1 · 充电中 1 · 故障 1 / 共 3')
  page.instance.onUnload()
})

test('incidents: acknowledge, then resolve with a note', async () => {
  let list = [{ id: 7, severity: 'minor', state: 'open', kind: 'plug_fault', pile_id: 4, pile_serial: 'P0001', port_no: 1 },
    { id: 8, severity: 'critical', state: 'open', kind: 'smoke', pile_id: 4, pile_serial: 'P0001', port_no: 2, cut_off: true }]
  const wx = serve({
    'GET /api/v1/incidents': () => ({ statusCode: 200, data: list }),
    'POST /api/v1/incidents/8/acknowledge': () => {
      list = list.map((i) => (i.id === 8 ? { ...i, state: 'acknowledged' } : i))
      return { statusCode: 200, data: list[1] }
    },
    'POST /api/v1/incidents/8/resolve': (o) => {
      expect(o.data).toEqual({ note: 'fixed' })
      list = list.filter((i) => i.id !== 8)
      return { statusCode: 200, data: { id: 8, state: 'resolved' } }
    },
  }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/incidents/incidents')
  await page.instance.onLoad({ community_id: '5' })
  await settle()
  const shown = text(page)
  expect(shown.indexOf('烟雾报警')).toBeLessThan(shown.indexOf('插头故障')) // critical first
  expect(shown).toContain('已自动断电')
  const listCall = wx.calls.requests[0].url
  expect(decodeURIComponent(listCall)).toContain('state=open,acknowledged')
  expect(page.querySelectorAll('.resolve')).toHaveLength(0) // only acknowledged ones resolve
  await tap(page, '.ack')
  expect(text(page)).toContain('已确认')
  await tap(page, '.resolve')
  expect(text(page)).not.toContain('烟雾报警')
  expect(wx.calls.toasts).toEqual(['已确认', '已解决'])
})

test('cash top-up: search, amount in yuan as integer fen, one request id per top-up', async () => {
  const bodies = []
  const wx = serve({
    'GET /api/v1/charging-accounts': [
      { id: 7, account_no: '13900000001', holder_name: '张三', status: 'active', kind: 'resident', balance: { available_fen: 100 } },
      { id: 8, account_no: '13900000002', holder_name: '李四', status: 'active', kind: 'resident', balance: { available_fen: 0 } }],
    'POST /api/v1/charging-accounts/7/cash-topups': (o) => {
      bodies.push(o.data)
      if (bodies.length === 1) return { fail: { errMsg: 'request:fail timeout' } }
      return { statusCode: 201, data: { transaction_id: 1, applied: true, balance: { available_fen: 2110 } } }
    },
  }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/topup/topup')
  await page.instance.onLoad({ community_id: '5' })
  await settle()
  page.instance.onSearch({ detail: { value: '李' } })
  await settle()
  expect(text(page)).not.toContain('张三')
  page.instance.onSearch({ detail: { value: '0001' } })
  page.instance.onSelect({ currentTarget: { dataset: { id: 7 } } })
  page.instance.setData({ amountText: '20.1' })
  await page.instance.onSubmit()
  await settle()
  expect(text(page)).toContain('请求超时')
  await page.instance.onSubmit() // the retry reuses the request id
  await settle()
  expect(bodies[0]).toEqual({ amount_fen: 2010, request_id: bodies[1].request_id })
  expect(text(page)).toContain('已充值 20.10 元，当前可用余额 21.10 元')
  expect(wx.calls.modals[0].content).toContain('20.10')
  page.instance.setData({ amountText: '1.234' })
  await page.instance.onSubmit()
  await settle()
  expect(text(page)).toContain('请输入正确的金额')
})

test('tariff: the one in force, history, and a new version from the form', async () => {
  let posted = null
  const wx = serve({
    'GET /api/v1/communities/5/tariffs': [
      { id: 3, community_id: 5, version: 3, effective_from: '2099-01-01T00:00:00Z', rules: { mode: 'per_hour', fen_per_hour: 80 } },
      { id: 2, community_id: 5, version: 2, effective_from: '2025-01-01T00:00:00Z', rules: { mode: 'per_kwh', energy_fen_per_kwh: 60, service_fen_per_kwh: 40, max_session_minutes: 720 } }],
    'POST /api/v1/communities/5/tariffs': (o) => { posted = o.data; return { statusCode: 201, data: { id: 4, version: 4, rules: o.data.rules } } },
  }, { role: 'property_operator' })
  staff()
  const page = render('pages/ops/tariff/tariff')
  await page.instance.onLoad({ community_id: '5' })
  await settle()
  const shown = text(page)
  expect(shown).toContain('1.00 元/度')
  expect(shown).toContain('第 2 版')
  expect(shown).toContain('待生效')
  page.instance.onInput({ currentTarget: { dataset: { field: 'energy_yuan' } }, detail: { value: '0.7' } })
  await page.instance.onSave()
  await settle()
  expect(posted).toEqual({ rules: { mode: 'per_kwh', energy_fen_per_kwh: 70, service_fen_per_kwh: 40, max_session_minutes: 720 } })
  expect(wx.calls.modals[0].content).toContain('1.10 元/度')
  expect(text(page)).toContain('已生效：第 4 版')
})

test('staff log-in', async () => {
  const wx = serve({ 'POST /api/v1/auth/login': (o) => (o.data.password === 'right'
    ? { statusCode: 200, data: { access_token: 'S', refresh_token: 'SR', role: 'property_operator', user_id: 2 } }
    : { statusCode: 401, data: { code: 'unauthenticated', message: 'wrong', details: {} } }) })
  const page = render('pages/ops/login/login')
  page.instance.setData({ username: 'op', password: 'wrong' })
  await page.instance.onSubmit()
  await settle()
  expect(text(page)).toContain('用户名或密码错误')
  page.instance.setData({ password: 'right' })
  await page.instance.onSubmit()
  expect(wx.calls.reLaunch).toEqual(['/pages/ops/index/index'])
  expect(wx.storage['evc.mode']).toBe('staff')
})

describe('components', () => {
  test('amount-picker emits the picked amount', async () => {
    const comp = render('components/amount-picker/amount-picker', {
      options: [{ fen: null, label: '不限' }, { fen: 500, label: '5.00 元' }], selected: null })
    const picked = []
    comp.addEventListener('change', (e) => picked.push(e.detail))
    expect(comp.querySelectorAll('.selected')).toHaveLength(1)
    comp.querySelectorAll('.chip')[1].dispatchEvent('tap')
    await settle()
    expect(picked).toEqual([{ fen: 500, index: 1 }])
    expect(comp.querySelectorAll('.chip')[1].dom.className).toContain('selected')
  })

  test('status-tag colours by status', async () => {
    const comp = render('components/status-tag/status-tag', { status: 'fault', text: '故障' })
    await settle()
    expect(comp.dom.innerHTML).toContain('tag-bad')
    expect(text(comp)).toBe('故障')
    comp.setData({ status: 'idle' })
    await simulate.sleep(0)
    expect(comp.dom.innerHTML).toContain('tag-ok')
  })

  test('stat-tile', () => {
    const comp = render('components/stat-tile/stat-tile', { label: '功率', value: '180 W', big: true })
    expect(text(comp)).toBe('功率180 W')
    expect(comp.dom.innerHTML).toContain('tile-big')
  })
})
