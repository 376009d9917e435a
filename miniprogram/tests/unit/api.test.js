const { createWx } = require('../helpers/wx-mock')

let api
let auth
let errors

function json(statusCode, data) {
  return { statusCode, data }
}

beforeEach(() => {
  jest.resetModules()
  global.wx = createWx()
  api = require('../../utils/api')
  auth = require('../../utils/auth')
  errors = require('../../utils/errors')
  require('../../utils/config').baseUrl = 'http://server.test/'
})

function bearer(options) {
  return (options.header.Authorization || '').replace('Bearer ', '')
}

test('URLs: base, prefix, path parameters encoded, empty query values left out', () => {
  expect(api.url('session', { session_id: 'S0123456789abcdef' }))
    .toBe('http://server.test/api/v1/charging-sessions/S0123456789abcdef')
  expect(api.url('sessions', {}, { status: 'active', limit: 5, before_id: undefined, x: '' }))
    .toBe('http://server.test/api/v1/charging-sessions?status=active&limit=5')
  expect(api.url('publicPort', { code: 'a/b' })).toBe('http://server.test/api/v1/public/ports/a%2Fb')
  expect(() => api.url('session', {})).toThrow(/missing path parameter/)
})

test('GET sends no body; POST sends JSON with the token', async () => {
  api.setTokens({ access_token: 'A1', refresh_token: 'R1', role: 'resident', user_id: 1 })
  wx.handler = (o) => json(o.method === 'GET' ? 200 : 201, { ok: o.method, data: o.data })
  const got = await api.me()
  expect(got.data).toBeUndefined()
  const posted = await api.startCharge(3, 'ABCD1234', 2000)
  expect(posted.data).toEqual({ charging_account_id: 3, port_code: 'ABCD1234', max_amount_fen: 2000 })
  const noLimit = await api.startCharge(3, 'ABCD1234', null)
  expect(noLimit.data).toEqual({ charging_account_id: 3, port_code: 'ABCD1234' })
  wx.calls.requests.forEach((o) => expect(bearer(o)).toBe('A1'))
  expect(wx.calls.requests[1].header['Content-Type']).toBe('application/json')
  expect(wx.calls.requests[1].timeout).toBeGreaterThanOrEqual(20000)
})

test('public endpoints send no token', async () => {
  api.setTokens({ access_token: 'A1', refresh_token: 'R1' })
  wx.handler = () => json(200, { port_id: 1 })
  await api.publicPort('ABCD1234')
  expect(wx.calls.requests[0].header.Authorization).toBeUndefined()
})

test('204 resolves with null', async () => {
  api.setTokens({ access_token: 'A1', refresh_token: 'R1' })
  wx.handler = () => json(204, '')
  await expect(api.unbind(5)).resolves.toBeNull()
})

test('an expired token is refreshed once and the call retried', async () => {
  api.setTokens({ access_token: 'OLD', refresh_token: 'R1', role: 'resident', user_id: 1 })
  wx.handler = (o) => {
    if (o.url.endsWith('/auth/refresh')) {
      expect(bearer(o)).toBe('R1')
      return json(200, { access_token: 'NEW', refresh_token: 'R2', role: 'resident', user_id: 1 })
    }
    return bearer(o) === 'NEW' ? json(200, { id: 1 })
      : json(401, { code: 'token_expired', message: 'expired', details: {} })
  }
  await expect(api.me()).resolves.toEqual({ id: 1 })
  expect(api.getTokens()).toMatchObject({ access_token: 'NEW', refresh_token: 'R2' })
  expect(wx.storage['evc.tokens'].access_token).toBe('NEW')
  expect(wx.calls.requests.map((o) => o.url.replace('http://server.test/api/v1', '')))
    .toEqual(['/auth/me', '/auth/refresh', '/auth/me'])
})

test('parallel calls share ONE refresh (refresh tokens rotate)', async () => {
  api.setTokens({ access_token: 'OLD', refresh_token: 'R1' })
  let refreshes = 0
  wx.handler = async (o) => {
    if (o.url.endsWith('/auth/refresh')) {
      refreshes += 1
      await new Promise((r) => setTimeout(r, 10))
      return json(200, { access_token: 'NEW', refresh_token: 'R2', role: 'resident' })
    }
    return bearer(o) === 'NEW' ? json(200, []) : json(401, { code: 'token_expired', details: {} })
  }
  await Promise.all([api.accounts(), api.sessions(), api.me()])
  expect(refreshes).toBe(1)
})

test('a dead refresh token: the login handler logs a resident in again (wx.login)', async () => {
  auth.install()
  api.setTokens({ access_token: 'OLD', refresh_token: 'DEAD', role: 'resident' })
  const seen = []
  wx.handler = (o) => {
    const path = o.url.replace('http://server.test/api/v1', '')
    seen.push(path)
    if (path === '/auth/refresh') return json(401, { code: 'token_revoked', details: {} })
    if (path === '/auth/wechat-login') {
      expect(o.data).toEqual({ code: 'test-code' })
      return json(200, { access_token: 'FRESH', refresh_token: 'R9', role: 'resident', user_id: 7 })
    }
    return bearer(o) === 'FRESH' ? json(200, { id: 7 }) : json(401, { code: 'token_expired', details: {} })
  }
  await expect(api.me()).resolves.toEqual({ id: 7 })
  expect(seen).toEqual(['/auth/me', '/auth/refresh', '/auth/wechat-login', '/auth/me'])
})

test('no token yet: a resident is logged in before the first call', async () => {
  auth.install()
  wx.handler = (o) => (o.url.endsWith('/auth/wechat-login')
    ? json(200, { access_token: 'T', refresh_token: 'R', role: 'resident', user_id: 1 })
    : json(200, []))
  await api.accounts()
  expect(wx.calls.requests.map((o) => o.url.split('/api/v1')[1]))
    .toEqual(['/auth/wechat-login', '/charging-accounts'])
})

test('a wrong PIN (401 unauthenticated with a good token) is NOT retried', async () => {
  auth.install()
  api.setTokens({ access_token: 'GOOD', refresh_token: 'R' })
  wx.handler = () => json(401, { code: 'unauthenticated', message: 'the current PIN is wrong', details: {} })
  const err = await api.changePin(1, '111111', '222222').catch((e) => e)
  expect(err).toBeInstanceOf(errors.ApiError)
  expect(err.code).toBe('unauthenticated')
  expect(wx.calls.requests).toHaveLength(1)
  expect(api.getTokens().access_token).toBe('GOOD')
})

test('staff whose session died are sent to the log-in page, not retried', async () => {
  auth.install()
  auth.setMode('staff')
  api.setTokens({ access_token: 'OLD', refresh_token: 'DEAD', role: 'property_operator' })
  wx.handler = () => json(401, { code: 'token_revoked', details: {} })
  const err = await api.piles(1).catch((e) => e)
  expect(err.code).toBe('token_revoked')
  expect(err.message).toBe('登录已失效，请重新登录')
  expect(wx.calls.navigateTo).toEqual(['/pages/ops/login/login'])
})

test('errors carry Chinese messages and the 409 reason', async () => {
  api.setTokens({ access_token: 'A', refresh_token: 'R' })
  wx.handler = () => json(409, { code: 'conflict', message: 'the pile did not start charging',
    details: { reason: 'nack:not_plugged', session_id: 'S1' } })
  const err = await api.startCharge(1, 'ABCD1234').catch((e) => e)
  expect(err.status).toBe(409)
  expect(err.reason).toBe('nack:not_plugged')
  expect(err.message).toBe('请先插好插头，再扫码充电')
})

test('network failure and timeout', async () => {
  api.setTokens({ access_token: 'A', refresh_token: 'R' })
  wx.handler = () => ({ fail: { errMsg: 'request:fail timeout' } })
  const err = await api.me().catch((e) => e)
  expect(err.code).toBe('timeout')
  expect(err.status).toBe(0)
})

test('an endpoint the server does not have yet reads as "not available"', async () => {
  api.setTokens({ access_token: 'A', refresh_token: 'R' })
  wx.handler = () => json(404, { code: 'not_found', message: 'The requested URL was not found', details: {} })
  // no entry is pending today: a made-up one stands in for the next
  api.ENDPOINTS.comingSoon = { method: 'GET', path: '/coming-soon', reads: [],
    pending: 'a test stand-in' }
  try {
    const err = await api.call('comingSoon').catch((e) => e)
    expect(err.code).toBe('unavailable')
    expect(err.message).toBe('此功能暂未开放')
  } finally {
    delete api.ENDPOINTS.comingSoon
  }
  const real404 = await api.nearby(30.25, 120.16).catch((e) => e)
  expect(real404.code).toBe('not_found')
  const session404 = await api.session('S0000000000000000').catch((e) => e)
  expect(session404.code).toBe('not_found')
})

test('logout revokes on the server and forgets the tokens', async () => {
  api.setTokens({ access_token: 'A', refresh_token: 'R' })
  wx.handler = () => json(200, { message: 'logged out' })
  await auth.logout()
  expect(wx.calls.requests[0].data).toEqual({ refresh_token: 'R' })
  expect(api.isLoggedIn()).toBe(false)
  expect(wx.storage['evc.tokens']).toBeUndefined()
})

test('staff login refuses a resident account', async () => {
  wx.handler = () => json(200, { access_token: 'A', refresh_token: 'R', role: 'resident' })
  await expect(auth.staffLogin('x', 'y')).rejects.toThrow(/not a staff account/)
  expect(api.isLoggedIn()).toBe(false)
  wx.handler = () => json(200, { access_token: 'A', refresh_token: 'R', role: 'property_operator' })
  await auth.staffLogin('op', 'pw')
  expect(auth.mode()).toBe('staff')
  expect(api.role()).toBe('property_operator')
})

test('every wrapper names an endpoint in the table, and the table is well-formed', () => {
  Object.entries(api.ENDPOINTS).forEach(([name, ep]) => {
    expect(['GET', 'POST', 'PATCH', 'DELETE', 'PUT']).toContain(ep.method)
    expect(ep.path.startsWith('/')).toBe(true)
    expect(Array.isArray(ep.reads)).toBe(true)
    expect(typeof (name === 'refresh' ? api.refreshTokens : api[name])).toBe('function')
  })
})
