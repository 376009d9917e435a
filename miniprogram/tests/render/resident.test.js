/** @jest-environment jsdom */
const { configure, render, serve, settle, text, tap, pick } = require('../helpers/render')

const PORT = { port_id: 11, public_code: 'AB12CD34EF', number: 2, status: 'plugged',
  pile_serial: 'P0001', pile_online: true, community_id: 5, community_name: '阳光小区',
  building_name: '3号车棚' }
const TARIFF = { version: 2, effective_from: '2025-01-01T00:00:00Z',
  rules: { mode: 'per_kwh', energy_fen_per_kwh: 60, service_fen_per_kwh: 40 } }
const ACCOUNT = { id: 7, community_id: 5, community_name: '阳光小区', account_no: '13900000001',
  holder_name: '张三', kind: 'resident', status: 'active', locked_until: null,
  balance: { available_fen: 5000, held_fen: 0, total_fen: 5000 },
  cards: [{ id: 3, card_uid: 'A1B2C3D4', charging_account_id: 7, status: 'active' }] }

beforeAll(() => configure({ pollIntervalMs: 10 }))

describe('port page', () => {
  test('shows the port and tariff, and starts with the chosen account and limit', async () => {
    let started = null
    const wx = serve({
      'GET /api/v1/public/ports/AB12CD34EF': { ...PORT, tariff: TARIFF },
      'GET /api/v1/charging-accounts': [ACCOUNT],
      'POST /api/v1/charging-sessions': (o) => {
        started = o.data
        return { statusCode: 201, data: { session_id: 'S0123456789abcdef', status: 'active' } }
      },
    })
    const page = render('pages/port/port')
    await page.instance.onLoad({ code: 'ab12cd34ef' })
    await settle()
    const shown = text(page)
    expect(shown).toContain('阳光小区')
    expect(shown).toContain('3号车棚 P0001 · 2号插座')
    expect(shown).toContain('已插枪')
    expect(shown).toContain('1.00 元/度')
    expect(shown).toContain('电费 0.60 元/度 + 服务费 0.40 元/度')
    expect(shown).toContain('阳光小区 139****0001（余额 50.00 元）')
    // pick the 10-yuan limit
    await pick(page, 'limits', 2)
    await tap(page, '.start-btn')
    expect(started).toEqual({ charging_account_id: 7, port_code: 'AB12CD34EF', max_amount_fen: 1000 })
    expect(wx.calls.redirectTo).toEqual(['/pages/charging/charging?session_id=S0123456789abcdef'])
  })

  test('a refused start says why, in Chinese', async () => {
    serve({
      'GET /api/v1/public/ports/AB12CD34EF': PORT,
      'GET /api/v1/charging-accounts': [ACCOUNT],
      'POST /api/v1/charging-sessions': { statusCode: 409, data: null },
    })
    global.wx.handler = ((inner) => (o) => (o.method === 'POST'
      ? { statusCode: 409, data: { code: 'conflict', message: 'the pile did not start charging',
        details: { reason: 'nack:not_plugged', session_id: 'S1' } } } : inner(o)))(global.wx.handler)
    const page = render('pages/port/port')
    await page.instance.onLoad({ code: 'AB12CD34EF' })
    await settle()
    expect(text(page)).toContain('资费以充电桩显示为准')
    await tap(page, '.start-btn')
    expect(text(page)).toContain('请先插好插头，再扫码充电')
    expect(global.wx.calls.redirectTo).toEqual([])
  })

  test('without an account: charge as a visitor or bind one', async () => {
    const wx = serve({ 'GET /api/v1/public/ports/AB12CD34EF': PORT, 'GET /api/v1/charging-accounts': [] })
    const page = render('pages/port/port')
    await page.instance.onLoad({ code: 'AB12CD34EF' })
    await settle()
    expect(text(page)).toContain('还没有充电账户')
    await tap(page, '.visitor-btn')
    await tap(page, '.bind-btn')
    expect(wx.calls.navigateTo).toEqual(['/pages/visitor/visitor?code=AB12CD34EF',
      `/pages/bind/bind?community_id=5&community_name=${encodeURIComponent('阳光小区')}`])
  })

  test('an offline pile cannot be started; an unknown code says so', async () => {
    serve({ 'GET /api/v1/public/ports/AB12CD34EF': { ...PORT, pile_online: false },
      'GET /api/v1/charging-accounts': [ACCOUNT] })
    const page = render('pages/port/port')
    await page.instance.onLoad({ code: 'AB12CD34EF' })
    await settle()
    expect(text(page)).toContain('离线')
    expect(text(page)).toContain('该插座当前不可用')
    const other = render('pages/port/port')
    await other.instance.onLoad({ code: 'ZZZZ9999' })
    await settle()
    expect(text(other)).toContain('没有找到相关内容')
  })
})

describe('receipt page', () => {
  test('a visitor sees the prepayment and the refund', async () => {
    serve({ 'GET /api/v1/charging-sessions/S0123456789abcdef': {
      session_id: 'S0123456789abcdef', status: 'settled', method: 'visitor', pile_serial: 'P0001',
      port_number: 2, energy_wh: 1230, cost_fen: 123, max_amount_fen: 500, refund_fen: 377,
      elapsed_s: 3725, available_fen: null, stop_reason: 'unplugged',
      started_at: '2025-11-24T10:00:00Z', ended_at: '2025-11-24T11:02:05Z' } })
    const page = render('pages/receipt/receipt')
    page.instance.onLoad({ session_id: 'S0123456789abcdef' })
    await settle()
    const shown = text(page)
    expect(shown).toContain('充电已结束')
    expect(shown).toContain('1.23元')
    expect(shown).toContain('1.23 度')
    expect(shown).toContain('1小时02分')
    expect(shown).toContain('插头已拔出')
    expect(shown).toContain('预付5.00 元')
    expect(shown).toContain('3.77 元（原路退回）')
    expect(shown).not.toContain('账户可用余额')
    page.instance.onUnload()
  })

  test('a failed start', async () => {
    serve({ 'GET /api/v1/charging-sessions/S0123456789abcdef': { session_id: 'S0123456789abcdef',
      status: 'failed', failure_reason: 'ack_timeout', cost_fen: 0, energy_wh: 0 } })
    const page = render('pages/receipt/receipt')
    page.instance.onLoad({ session_id: 'S0123456789abcdef' })
    await settle()
    expect(text(page)).toContain('充电未能启动')
    expect(text(page)).toContain('充电桩没有响应，请稍后再试')
    page.instance.onUnload()
  })
})

describe('home page', () => {
  test('nearest communities first, with distance and free ports; scan opens the port', async () => {
    const wx = serve({
      'GET /api/v1/public/communities': [ // the server sorts too; the page does not rely on it
        { id: 1, name: '远的小区', address: '北路 1 号', lat: 30.1, lng: 120, distance_m: 11120,
          pile_count: 1, piles_online: 1, port_count: 10, free_ports: 4 },
        { id: 2, name: '近的小区', address: '南路 2 号', lat: 30.001, lng: 120, distance_m: 111,
          pile_count: 2, piles_online: 2, port_count: 20, free_ports: 7 },
      ],
      'GET /api/v1/charging-sessions': [{ id: 1, session_id: 'S0123456789abcdef', status: 'active',
        started_at: '2025-11-24T10:00:00Z' }],
    })
    wx.getLocation = (o) => o.success({ latitude: 30, longitude: 120 })
    wx.scanCode = (o) => o.success({ result: 'https://ev.example.com/q/AB12CD34EF' })
    const page = render('pages/index/index')
    await page.instance.onLoad()
    await settle()
    const shown = text(page)
    expect(shown.indexOf('近的小区')).toBeLessThan(shown.indexOf('远的小区'))
    expect(shown).toContain('111 米')
    expect(shown).toContain('11 公里')
    expect(shown).toContain('空闲 7/20')
    expect(shown).toContain('您有一个正在进行的充电')
    page.querySelectorAll('.place')[0].dispatchEvent('tap')
    await settle()
    expect(wx.calls.openLocation[0]).toMatchObject({ latitude: 30.001, longitude: 120, name: '近的小区' })
    await page.instance.onScan()
    expect(wx.calls.navigateTo).toEqual(['/pages/port/port?code=AB12CD34EF'])
    const nearbyCall = wx.calls.requests.find((r) => r.url.includes('/public/communities'))
    expect(nearbyCall.url).toContain('lat=30&lng=120')
  })

  test('without the location there is no list, only a note; scanning still works', async () => {
    const wx = serve({ 'GET /api/v1/charging-sessions': [] })
    wx.scanCode = (o) => o.success({ result: 'WIFI:S:home;;' })
    const page = render('pages/index/index')
    await page.instance.onLoad()
    await settle()
    expect(text(page)).toContain('未获得位置授权，无法查找附近充电站')
    expect(text(page)).not.toContain('附近暂无充电站')
    expect(wx.calls.requests.some((r) => r.url.includes('/public/communities'))).toBe(false)
    await page.instance.onScan()
    expect(wx.calls.toasts).toContain('这不是充电插座的二维码')
    expect(wx.calls.navigateTo).toEqual([])
  })

  test('nobody near: says so', async () => {
    const wx = serve({ 'GET /api/v1/public/communities': [], 'GET /api/v1/charging-sessions': [] })
    wx.getLocation = (o) => o.success({ latitude: 30, longitude: 120 })
    const page = render('pages/index/index')
    await page.instance.onLoad()
    await settle()
    expect(text(page)).toContain('附近暂无充电站')
    expect(text(page)).not.toContain('未获得位置授权')
  })
})

describe('wallet', () => {
  test('balances, WeChat Pay top-up, the balance after the order is paid', async () => {
    let balance = 5000
    let paid = false
    const wx = serve({
      'GET /api/v1/charging-accounts': () => ({ statusCode: 200, data: [{ ...ACCOUNT,
        balance: { available_fen: balance, held_fen: 2000, total_fen: balance + 2000 } }] }),
      'POST /api/v1/payments/wechat/orders': (o) => {
        expect(o.data).toEqual({ charging_account_id: 7, amount_fen: 2000 })
        return { statusCode: 201, data: { order: { out_trade_no: 'EV2025112400001', amount_fen: 2000,
          status: 'created' }, pay_params: { timeStamp: '1', nonceStr: 'n', package: 'prepay_id=wx1',
          signType: 'RSA', paySign: 'sig' } } }
      },
      'GET /api/v1/payments/orders/EV2025112400001': () => ({ statusCode: 200, data: {
        out_trade_no: 'EV2025112400001', amount_fen: 2000, status: paid ? 'paid' : 'created' } }),
    })
    wx.requestPayment = (o) => {
      expect(o.package).toBe('prepay_id=wx1')
      paid = true
      balance += 2000
      o.success({ errMsg: 'requestPayment:ok' })
    }
    const page = render('pages/wallet/wallet')
    await page.instance.onShow()
    await settle()
    expect(text(page)).toContain('50.00')
    expect(text(page)).toContain('冻结 20.00')
    await pick(page, 'amounts', 1) // 20 yuan
    await page.instance.onTopup()
    await settle()
    expect(wx.calls.toasts).toContain('已充值 20.00 元')
    expect(text(page)).toContain('70.00')
  })

  test('a cancelled payment changes nothing', async () => {
    const wx = serve({
      'GET /api/v1/charging-accounts': [ACCOUNT],
      'POST /api/v1/payments/wechat/orders': { order: { out_trade_no: 'EV1' }, pay_params: {} },
    })
    wx.requestPayment = (o) => o.fail({ errMsg: 'requestPayment:fail cancel' })
    const page = render('pages/wallet/wallet')
    await page.instance.onShow()
    await page.instance.onTopup()
    await settle()
    expect(text(page)).toContain('已取消支付')
    expect(wx.calls.requests.filter((r) => r.url.includes('/payments/orders/'))).toHaveLength(0)
  })
})

describe('accounts, cards, PIN', () => {
  test('report a lost card, unbind', async () => {
    const wx = serve({
      'GET /api/v1/charging-accounts': [ACCOUNT],
      'PATCH /api/v1/cards/3': (o) => ({ statusCode: 200, data: { id: 3, status: o.data.status } }),
      'DELETE /api/v1/me/bindings/7': { statusCode: 204 },
    })
    wx.handler = ((inner) => (o) => (o.method === 'DELETE' ? { statusCode: 204, data: '' } : inner(o)))(wx.handler)
    const page = render('pages/accounts/accounts')
    await page.instance.onShow()
    await settle()
    expect(text(page)).toContain('•••• C3D4')
    await tap(page, '.block-card')
    const patch = wx.calls.requests.find((r) => r.method === 'PATCH')
    expect(patch.data).toEqual({ status: 'blocked' })
    await tap(page, '.unbind')
    expect(wx.calls.requests.some((r) => r.method === 'DELETE' && r.url.endsWith('/me/bindings/7'))).toBe(true)
  })

  test('PIN change checks the form first; a wrong old PIN says so', async () => {
    const wx = serve({ 'POST /api/v1/charging-accounts/7/pin': { statusCode: 401, data: null } })
    wx.handler = () => ({ statusCode: 401, data: { code: 'unauthenticated', message: 'the current PIN is wrong', details: {} } })
    const page = render('pages/pin/pin')
    page.instance.onLoad({ account_id: '7' })
    page.instance.setData({ oldPin: '135790', newPin: '246802', again: '246803' })
    await page.instance.onSubmit()
    await settle()
    expect(text(page)).toContain('两次输入的新密码不一致')
    expect(wx.calls.requests).toHaveLength(0)
    page.instance.setData({ again: '246802' })
    await page.instance.onSubmit()
    await settle()
    expect(text(page)).toContain('原密码不正确')
    expect(wx.calls.requests[0].data).toEqual({ old_pin: '135790', new_pin: '246802' })
  })

  test('bind with the community from a scanned port', async () => {
    let body = null
    const wx = serve({
      'GET /api/v1/public/ports/AB12CD34EF': PORT,
      'POST /api/v1/me/bindings': (o) => { body = o.data; return { statusCode: 201, data: ACCOUNT } },
    })
    wx.scanCode = (o) => o.success({ result: 'https://ev.example.com/q/AB12CD34EF' })
    const page = render('pages/bind/bind')
    page.instance.onLoad({})
    await page.instance.onSubmit()
    await settle()
    expect(text(page)).toContain('请先扫描小区内任一充电桩的二维码')
    await page.instance.onScanCommunity()
    await settle()
    expect(text(page)).toContain('阳光小区')
    page.instance.setData({ accountNo: '13900000001', pin: '135790' })
    await page.instance.onSubmit()
    expect(body).toEqual({ community_id: 5, account_no: '13900000001', pin: '135790' })
    expect(wx.calls.navigateBack).toBe(1)
  })
})

describe('visitor', () => {
  test('choose a duration priced by the tariff, pay, wait for the start, go live', async () => {
    let sent = null
    let polls = 0
    const wx = serve({
      'GET /api/v1/public/ports/AB12CD34EF': { ...PORT, tariff: { version: 1,
        rules: { mode: 'per_hour', fen_per_hour: 50 } } },
      'POST /api/v1/visitor-charges': (o) => {
        sent = o.data
        return { statusCode: 201, data: { session_id: 'S00000000000000v1', status: 'pending_payment',
          order: { out_trade_no: 'EV9', amount_fen: o.data.amount_fen, status: 'created' },
          pay_params: { package: 'prepay_id=wx9' } } }
      },
      'GET /api/v1/charging-sessions/S00000000000000v1': () => {
        polls += 1
        return { statusCode: 200, data: { session_id: 'S00000000000000v1',
          status: polls > 1 ? 'active' : 'pending_payment' } }
      },
    })
    const page = render('pages/visitor/visitor')
    await page.instance.onLoad({ code: 'AB12CD34EF' })
    await settle()
    expect(text(page)).toContain('0.50 元/小时')
    expect(text(page)).toContain('¥2.00') // the first amount
    page.querySelectorAll('.chip')[1].dispatchEvent('tap') // by duration
    await settle()
    await pick(page, 'hours', 2) // 4 hours at 0.50 → 2.00 yuan
    expect(text(page)).toContain('¥2.00')
    await pick(page, 'hours', 3) // 8 hours → 4.00 yuan
    expect(text(page)).toContain('¥4.00')
    await pick(page, 'hours', 0) // 1 hour → 0.50, but at least 1 yuan
    expect(text(page)).toContain('¥1.00')
    await pick(page, 'hours', 3)
    expect(text(page)).toContain('¥4.00')
    await page.instance.onPay()
    expect(sent).toEqual({ port_code: 'AB12CD34EF', amount_fen: 400, max_minutes: 480 })
    expect(wx.calls.redirectTo).toEqual(['/pages/charging/charging?session_id=S00000000000000v1'])
  })
})
