/**
 * THE API client: every call the mini-program makes to the server goes through here.
 *
 * - base URL from utils/config.js;
 * - JWT access token on every authenticated call; on 401 `token_expired` the refresh
 *   token is traded once (single flight: refresh tokens rotate, so two parallel refreshes
 *   would revoke each other) and the call is retried; when that fails too, the login
 *   handler (utils/auth.js: a silent wx.login for residents) gets one chance;
 * - errors become ApiError with a plain Chinese `message` (utils/errors.js).
 *
 * ENDPOINTS is the table of every call: method, path, what it sends, and which response
 * fields the pages read. tests/contract checks it against the server's OpenAPI spec.
 * An entry with `pending` is an endpoint the server does not have yet (none today): the
 * note says who is adding it, and the page degrades ("此功能暂未开放") until it exists;
 * `pendingReads` are response fields still to come. The contract test lists both as todos.
 */
const config = require('./config')
const errors = require('./errors')

const SESSION_READS = ['session_id', 'status', 'method', 'pile_id', 'port_id', 'port_number',
  'pile_serial', 'community_id', 'charging_account_id', 'power_w', 'peak_power_w',
  'energy_wh', 'cost_fen', 'max_amount_fen', 'max_minutes', 'elapsed_s', 'remaining_s',
  'available_fen', 'refund_fen', 'started_at', 'ended_at', 'stop_reason', 'failure_reason']
const ACCOUNT_READS = ['id', 'community_id', 'community_name', 'account_no', 'holder_name',
  'kind', 'status', 'locked_until', 'balance.available_fen', 'balance.held_fen',
  'cards[].id', 'cards[].card_uid', 'cards[].status']
const TOKEN_READS = ['access_token', 'refresh_token', 'role', 'user_id']
const PILE_READS = ['id', 'community_id', 'serial', 'model', 'online', 'enabled', 'lat', 'lng',
  'last_seen_at', 'port_count', 'ports[].id', 'ports[].number', 'ports[].status',
  'ports[].public_code', 'ports[].status_changed_at']
const INCIDENT_READS = ['id', 'category', 'kind', 'severity', 'state', 'community_id',
  'pile_id', 'pile_serial', 'port_no', 'opened_at', 'last_raised_at', 'raised_count',
  'cut_off', 'acknowledged_at', 'resolved_at', 'reason']

const ENDPOINTS = {
  // --- log in -------------------------------------------------------------------------
  wechatLogin: { method: 'POST', path: '/auth/wechat-login', auth: false, sends: ['code'],
    reads: TOKEN_READS },
  staffLogin: { method: 'POST', path: '/auth/login', auth: false,
    sends: ['username', 'password'], reads: TOKEN_READS },
  refresh: { method: 'POST', path: '/auth/refresh', auth: 'refresh', reads: TOKEN_READS },
  logout: { method: 'POST', path: '/auth/logout', sends: ['refresh_token'], reads: ['message'] },
  me: { method: 'GET', path: '/auth/me', reads: ['id', 'role', 'username', 'display_name', 'phone',
    'property_company_id', 'power_company_id'] },
  updateMe: { method: 'PATCH', path: '/auth/me', sends: ['display_name', 'phone'],
    reads: ['id', 'display_name', 'phone'] },
  bindPhone: { method: 'POST', path: '/auth/me/phone', sends: ['code'],
    reads: ['id', 'phone'] },
  subscribe: { method: 'POST', path: '/me/subscriptions', sends: ['subscriptions'],
    reads: [] },

  // --- what a QR code / the map shows --------------------------------------------------
  publicPort: { method: 'GET', path: '/public/ports/{code}', auth: false,
    reads: ['port_id', 'public_code', 'number', 'status', 'pile_serial', 'pile_online',
      'community_id', 'community_name', 'building_name', 'tariff.version',
      'tariff.effective_from', 'tariff.rules'] },
  nearby: { method: 'GET', path: '/public/communities', auth: false,
    query: ['lat', 'lng', 'limit'],
    reads: ['id', 'name', 'address', 'lat', 'lng', 'distance_m', 'pile_count', 'port_count',
      'free_ports'] },

  // --- accounts, wallet ----------------------------------------------------------------
  accounts: { method: 'GET', path: '/charging-accounts', query: ['community_id'],
    reads: ACCOUNT_READS },
  account: { method: 'GET', path: '/charging-accounts/{account_id}', reads: ACCOUNT_READS },
  bind: { method: 'POST', path: '/me/bindings', sends: ['community_id', 'account_no', 'pin'],
    reads: ACCOUNT_READS },
  unbind: { method: 'DELETE', path: '/me/bindings/{account_id}', reads: [] },
  changePin: { method: 'POST', path: '/charging-accounts/{account_id}/pin',
    sends: ['old_pin', 'new_pin'], reads: [] },
  setCardStatus: { method: 'PATCH', path: '/cards/{card_id}', sends: ['status'],
    reads: ['id', 'card_uid', 'status'] },
  transactions: { method: 'GET', path: '/charging-accounts/{account_id}/transactions',
    query: ['limit', 'before_id'],
    reads: ['id', 'kind', 'channel', 'amount_fen', 'memo', 'created_at'] },
  wechatTopup: { method: 'POST', path: '/payments/wechat/orders',
    sends: ['charging_account_id', 'amount_fen'],
    reads: ['order.out_trade_no', 'order.amount_fen', 'order.status', 'pay_params'] },
  order: { method: 'GET', path: '/payments/orders/{out_trade_no}',
    reads: ['out_trade_no', 'amount_fen', 'status', 'paid_at', 'purpose'] },

  // --- charging ------------------------------------------------------------------------
  startCharge: { method: 'POST', path: '/charging-sessions',
    sends: ['charging_account_id', 'port_code', 'max_amount_fen'], reads: SESSION_READS,
    timeout: 'long' },
  session: { method: 'GET', path: '/charging-sessions/{session_id}', reads: SESSION_READS },
  stopCharge: { method: 'POST', path: '/charging-sessions/{session_id}/stop',
    reads: SESSION_READS },
  sessions: { method: 'GET', path: '/charging-sessions',
    query: ['charging_account_id', 'community_id', 'status', 'limit', 'before_id'],
    reads: ['id', 'session_id', 'status', 'method', 'pile_id', 'port_id',
      'charging_account_id', 'start_energy_wh', 'end_energy_wh', 'cost_fen', 'refund_fen',
      'started_at', 'ended_at', 'stop_reason', 'failure_reason'] },
  visitorCharge: { method: 'POST', path: '/visitor-charges',
    sends: ['port_code', 'amount_fen', 'max_minutes'],
    reads: ['session_id', 'status', 'order.out_trade_no', 'order.amount_fen', 'order.status',
      'pay_params'] },

  // --- operators -----------------------------------------------------------------------
  communities: { method: 'GET', path: '/communities', query: ['limit'],
    reads: ['id', 'name', 'address', 'lat', 'lng', 'property_company_id'] },
  piles: { method: 'GET', path: '/piles', query: ['community_id', 'limit'], reads: PILE_READS },
  pile: { method: 'GET', path: '/piles/{pile_id}', reads: PILE_READS },
  cashTopup: { method: 'POST', path: '/charging-accounts/{account_id}/cash-topups',
    sends: ['amount_fen', 'request_id', 'memo'],
    reads: ['transaction_id', 'applied', 'balance.available_fen'] },
  tariffs: { method: 'GET', path: '/communities/{community_id}/tariffs',
    reads: ['id', 'community_id', 'version', 'effective_from', 'rules', 'created_at'] },
  setTariff: { method: 'POST', path: '/communities/{community_id}/tariffs',
    sends: ['rules', 'effective_from'], reads: ['id', 'version', 'effective_from', 'rules'] },
  overview: { method: 'GET', path: '/monitoring/overview', query: ['community_id'],
    reads: ['generated_at', 'communities[].community_id', 'communities[].piles',
      'communities[].ports', 'communities[].live_power_w', 'communities[].active_sessions',
      'communities[].open_incidents'] },
  dailyReport: { method: 'GET', path: '/reports/daily', query: ['from', 'to', 'community_id'],
    reads: ['from', 'to', 'totals'] },
  incidents: { method: 'GET', path: '/incidents',
    query: ['community_id', 'state', 'limit'], reads: INCIDENT_READS },
  ackIncident: { method: 'POST', path: '/incidents/{incident_id}/acknowledge', sends: ['note'],
    reads: INCIDENT_READS },
  resolveIncident: { method: 'POST', path: '/incidents/{incident_id}/resolve', sends: ['note'],
    reads: INCIDENT_READS },
}

// --- tokens ----------------------------------------------------------------------------

const TOKENS_KEY = 'evc.tokens'
let tokens = null

function getTokens() {
  if (tokens === null) {
    try {
      tokens = wx.getStorageSync(TOKENS_KEY) || {}
    } catch (e) {
      tokens = {}
    }
  }
  return tokens
}

function setTokens(body) {
  tokens = { access_token: body.access_token, refresh_token: body.refresh_token,
    role: body.role, user_id: body.user_id }
  try {
    wx.setStorageSync(TOKENS_KEY, tokens)
  } catch (e) { /* storage full: keep them in memory */ }
  return tokens
}

function clearTokens() {
  tokens = {}
  try {
    wx.removeStorageSync(TOKENS_KEY)
  } catch (e) { /* nothing stored */ }
}

function isLoggedIn() {
  return !!getTokens().access_token
}

function role() {
  return getTokens().role || null
}

// Who logs in again when the tokens are gone or dead: set by utils/auth.js. Resolves
// true when it logged in (the call is retried), false otherwise.
let loginHandler = null
function setLoginHandler(fn) {
  loginHandler = fn
}

// --- requests --------------------------------------------------------------------------

function encodeQuery(query) {
  const parts = []
  Object.keys(query || {}).forEach((key) => {
    const value = query[key]
    if (value === undefined || value === null || value === '') return
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`)
  })
  return parts.length ? `?${parts.join('&')}` : ''
}

function buildPath(template, params) {
  return template.replace(/\{(\w+)\}/g, (_, name) => {
    const value = params && params[name]
    if (value === undefined || value === null || value === '') {
      throw new Error(`missing path parameter ${name} for ${template}`)
    }
    return encodeURIComponent(String(value))
  })
}

function url(name, params, query) {
  const ep = ENDPOINTS[name]
  const base = String(config.baseUrl).replace(/\/+$/, '')
  return `${base}${config.apiPrefix}${buildPath(ep.path, params)}${encodeQuery(query)}`
}

function send(ep, target, body, bearer) {
  return new Promise((resolve, reject) => {
    const header = { Accept: 'application/json' }
    if (bearer) header.Authorization = `Bearer ${bearer}`
    const options = {
      url: target,
      method: ep.method,
      header,
      timeout: ep.timeout === 'long' ? Math.max(config.requestTimeoutMs, 20000)
        : config.requestTimeoutMs,
      success: (res) => resolve(res),
      fail: (err) => reject(errors.fromNetwork(err)),
    }
    if (ep.method !== 'GET' && ep.method !== 'DELETE') {
      header['Content-Type'] = 'application/json'
      options.data = body === undefined ? {} : body
    }
    wx.request(options)
  })
}

function bodyCode(res) {
  return res && res.data && typeof res.data === 'object' ? res.data.code : undefined
}

let refreshing = null

/** Trade the refresh token for a new pair, once at a time. Resolves true on success. */
function refreshTokens() {
  if (!refreshing) {
    const current = getTokens().refresh_token
    refreshing = (async () => {
      if (!current) return false
      try {
        const res = await send(ENDPOINTS.refresh, url('refresh'), undefined, current)
        if (res.statusCode === 200 && res.data && res.data.access_token) {
          setTokens(res.data)
          return true
        }
      } catch (e) { /* network: fall through */ }
      return false
    })().finally(() => {
      refreshing = null
    })
  }
  return refreshing
}

// 401s that mean "this token is no good": log in again. A 401 `unauthenticated` while we
// sent a token is NOT one of them: the server also answers it for a wrong PIN (domain
// AuthenticationFailed), and retrying would count as a second wrong PIN.
const AUTH_DEAD = ['token_expired', 'token_revoked', 'invalid_token']

async function tryLogin() {
  if (!loginHandler) return false
  try {
    return !!(await loginHandler())
  } catch (e) {
    return false
  }
}

/**
 * Call endpoint `name` with path `params`, `query` and JSON `body`. Resolves with the
 * response body (null for 204), rejects with an ApiError.
 */
async function call(name, { params, query, body } = {}) {
  const ep = ENDPOINTS[name]
  if (!ep) throw new Error(`unknown endpoint ${name}`)
  const target = url(name, params, query)
  const authed = ep.auth !== false
  if (authed && !getTokens().access_token) await tryLogin()
  const sentToken = authed && !!getTokens().access_token
  let res = await send(ep, target, body, authed ? getTokens().access_token : null)
  if (authed && res.statusCode === 401) {
    let again = false
    const code = bodyCode(res)
    if (code === 'token_expired') again = await refreshTokens()
    if (!again && (AUTH_DEAD.includes(code) || !sentToken)) {
      clearTokens()
      again = await tryLogin()
    }
    if (again) res = await send(ep, target, body, getTokens().access_token)
  }
  if (res.statusCode >= 200 && res.statusCode < 300) {
    return res.statusCode === 204 || res.data === '' ? null : res.data
  }
  if (ep.pending && (res.statusCode === 404 || res.statusCode === 405)
      && bodyCode(res) !== 'forbidden') {
    throw new errors.ApiError({ status: res.statusCode, code: 'unavailable',
      serverMessage: `${ep.method} ${ep.path} is not on this server yet` })
  }
  throw errors.fromResponse(res.statusCode, res.data)
}

// --- one function per call, for the pages ---------------------------------------------

const api = {
  ENDPOINTS,
  call,
  url,
  getTokens,
  setTokens,
  clearTokens,
  isLoggedIn,
  role,
  setLoginHandler,
  refreshTokens,

  wechatLogin: (code) => call('wechatLogin', { body: { code } }),
  staffLogin: (username, password) => call('staffLogin', { body: { username, password } }),
  logout: () => call('logout', { body: { refresh_token: getTokens().refresh_token || '' } }),
  me: () => call('me'),
  updateMe: (changes) => call('updateMe', { body: changes }),
  bindPhone: (code) => call('bindPhone', { body: { code } }),
  subscribe: (subscriptions) => call('subscribe', { body: { subscriptions } }),

  publicPort: (code) => call('publicPort', { params: { code } }),
  nearby: (lat, lng, limit = 20) => call('nearby', { query: { lat, lng, limit } }),

  accounts: (communityId) => call('accounts', { query: { community_id: communityId } }),
  account: (accountId) => call('account', { params: { account_id: accountId } }),
  bind: (communityId, accountNo, pin) => call('bind', {
    body: { community_id: communityId, account_no: accountNo, pin } }),
  unbind: (accountId) => call('unbind', { params: { account_id: accountId } }),
  changePin: (accountId, oldPin, newPin) => call('changePin', {
    params: { account_id: accountId }, body: { old_pin: oldPin, new_pin: newPin } }),
  setCardStatus: (cardId, status) => call('setCardStatus', {
    params: { card_id: cardId }, body: { status } }),
  transactions: (accountId, beforeId, limit = 20) => call('transactions', {
    params: { account_id: accountId }, query: { limit, before_id: beforeId } }),
  wechatTopup: (accountId, amountFen) => call('wechatTopup', {
    body: { charging_account_id: accountId, amount_fen: amountFen } }),
  order: (outTradeNo) => call('order', { params: { out_trade_no: outTradeNo } }),

  startCharge: (accountId, portCode, maxAmountFen) => call('startCharge', {
    body: maxAmountFen ? { charging_account_id: accountId, port_code: portCode,
      max_amount_fen: maxAmountFen } : { charging_account_id: accountId, port_code: portCode } }),
  session: (sessionId) => call('session', { params: { session_id: sessionId } }),
  stopCharge: (sessionId) => call('stopCharge', { params: { session_id: sessionId } }),
  sessions: (filters = {}) => call('sessions', { query: filters }),
  visitorCharge: (portCode, amountFen, maxMinutes) => call('visitorCharge', {
    body: maxMinutes ? { port_code: portCode, amount_fen: amountFen, max_minutes: maxMinutes }
      : { port_code: portCode, amount_fen: amountFen } }),

  communities: () => call('communities', { query: { limit: 200 } }),
  piles: (communityId) => call('piles', { query: { community_id: communityId, limit: 200 } }),
  pile: (pileId) => call('pile', { params: { pile_id: pileId } }),
  cashTopup: (accountId, amountFen, requestId, memo) => call('cashTopup', {
    params: { account_id: accountId },
    body: memo ? { amount_fen: amountFen, request_id: requestId, memo }
      : { amount_fen: amountFen, request_id: requestId } }),
  tariffs: (communityId) => call('tariffs', { params: { community_id: communityId } }),
  setTariff: (communityId, rules, effectiveFrom) => call('setTariff', {
    params: { community_id: communityId },
    body: effectiveFrom ? { rules, effective_from: effectiveFrom } : { rules } }),
  overview: (communityId) => call('overview', { query: { community_id: communityId } }),
  dailyReport: (firstDay, lastDay, communityId) => call('dailyReport', {
    query: { from: firstDay, to: lastDay, community_id: communityId } }),
  incidents: (filters = {}) => call('incidents', { query: filters }),
  ackIncident: (incidentId, note) => call('ackIncident', { params: { incident_id: incidentId },
    body: note ? { note } : {} }),
  resolveIncident: (incidentId, note) => call('resolveIncident', {
    params: { incident_id: incidentId }, body: note ? { note } : {} }),
}

module.exports = api
