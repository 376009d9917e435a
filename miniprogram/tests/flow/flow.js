#!/usr/bin/env node
/**
 * The mini-program's flow against the REAL running server (started by
 * tests/e2e/test_miniprogram_flow.py, with the simulated pile on the real broker):
 *
 *   resident: launch (wx.login → wechat-login) → home (the communities near the phone)
 *   → scan the sticker → port page (no account yet; the tariff) → bind the account → back
 *   on the port page → wallet, WeChat Pay top-up (the harness sends the signed payment
 *   notification) → start with a 20-yuan limit (subscribe messages accepted) → live page,
 *   polled, until the pile has charged → stop → receipt → history, account statement →
 *   the phone number from WeChat's getPhoneNumber button;
 *   operator (when EVC_STAFF_USER is set): log in → today's figures → piles → cash
 *   top-up → tariff → an alarm the harness raises on the pile: acknowledge, resolve;
 *   and the API client's table checked against the live server's OpenAPI document.
 *
 * stdout: one JSON object per line ({"event": ...}); the last is "result" (exit 0) or
 * "error" (exit 1). stdin: the harness's answers ({"event": "paid"}, …).
 * Env: EVC_BASE_URL, EVC_LOGIN_CODES (comma-separated wx.login codes), EVC_QR (the
 * sticker's payload), EVC_ACCOUNT_NO, EVC_PIN, EVC_LIMIT_FEN, EVC_TOPUP_FEN (optional),
 * EVC_STAFF_USER / EVC_STAFF_PASSWORD (optional), EVC_PHONE_CODE (optional: a getPhoneNumber
 * code the local fake WeChat knows), EVC_FLOW_TIMEOUT_S.
 */
const rt = require('./runtime')

const env = process.env
const need = (name) => {
  if (!env[name]) throw new Error(`${name} is not set`)
  return env[name]
}

const timeoutS = Number(env.EVC_FLOW_TIMEOUT_S || 150)
setTimeout(() => {
  rt.emit('error', { message: `the flow did not finish within ${timeoutS} s` })
  process.exit(3)
}, timeoutS * 1000).unref()

global.wx = rt.createWx({
  loginCodes: need('EVC_LOGIN_CODES').split(','),
  scanResults: [need('EVC_QR')],
  location: { lat: 31.2304, lng: 121.4737 },
})

const config = require('../../utils/config')

config.baseUrl = need('EVC_BASE_URL')
config.pollIntervalMs = 300
config.subscribeTemplates = { chargeFinished: 'TMPL-charge-finished', alarm: 'TMPL-alarm' }

const api = require('../../utils/api')
const { checkAll } = require('../contract/check')

function lastNav(type) {
  const nav = wx.log.nav[wx.log.nav.length - 1]
  if (!nav || (type && nav.type !== type)) {
    throw new Error(`expected a ${type}, navigation so far: ${JSON.stringify(wx.log.nav)}`)
  }
  return nav
}

function check(condition, message) {
  if (!condition) throw new Error(message)
}

async function resident(out) {
  rt.launchApp({ path: 'pages/index/index', query: {} })
  await rt.until(() => api.isLoggedIn(), { what: 'the silent wx.login at launch' })
  out.user = { role: api.role(), user_id: api.getTokens().user_id }
  rt.emit('logged_in', out.user)

  const home = await rt.openPage('/pages/index/index')
  out.home = { locationNote: home.data.locationNote, error: home.data.error, active: home.data.active,
    places: home.data.places.map((p) => ({ name: p.name, free: p.free, total: p.total,
      distance: p.distance })) }
  const code = await home.onScan()
  const toPort = lastNav('navigateTo').url
  check(code && toPort === `/pages/port/port?code=${code}`, `scan went to ${toPort}`)

  const port = await rt.openPage(toPort)
  check(!port.data.error, `port page: ${port.data.error}`)
  check(port.data.accounts.length === 0, 'a new WeChat user has no account yet')
  out.port = { ...port.data.port, tariffHeadline: port.data.tariffHeadline,
    tariffLines: port.data.tariffLines, startable: port.data.startable }

  port.onBind()
  const bind = await rt.openPage(lastNav('navigateTo').url)
  check(bind.data.communityName === port.data.port.community, 'bind page knows the community')
  bind.setData({ accountNo: need('EVC_ACCOUNT_NO'), pin: need('EVC_PIN') })
  const bound = await bind.onSubmit()
  check(bound && !bind.data.error, `binding failed: ${bind.data.error}`)
  lastNav('navigateBack')
  await port.onShow()
  check(port.data.accounts.length === 1, 'the bound account shows on the port page')
  out.accountOnPort = port.data.accountNames[0]

  const wallet = await rt.openPage('/pages/wallet/wallet')
  out.wallet = { before: wallet.data.total, accounts: wallet.data.accounts.map((a) => a.available) }
  if (env.EVC_TOPUP_FEN) {
    wallet.onPickAmount({ detail: { fen: Number(env.EVC_TOPUP_FEN) } })
    const order = await wallet.onTopup()
    check(order && order.status === 'paid', `top-up: ${wallet.data.error || wallet.data.notice}`)
    out.wallet.order = { out_trade_no: order.out_trade_no, amount_fen: order.amount_fen, status: order.status }
    out.wallet.after = wallet.data.total
    out.wallet.toasts = wx.log.toasts.slice()
  }

  port.onPickLimit({ detail: { fen: Number(env.EVC_LIMIT_FEN || 2000) } })
  const started = await port.onStart()
  check(started, `start refused: ${port.data.error}`)
  const toLive = lastNav('redirectTo').url
  out.subscribed = wx.log.subscribes.length

  const live = await rt.openPage(toLive)
  const sessionId = live.data.sessionId
  await rt.until(() => live.data.view && live.data.view.status === 'active',
    { what: 'the live page to show the charge running' })
  rt.emit('charging', { session_id: sessionId })
  // the harness makes the pile charge; the page shows it by itself (polling)
  await rt.until(() => live.latest && live.latest.cost_fen > 0 && live.latest.energy_wh > 0
    && live.latest.power_w > 0, { what: 'energy and cost on the live page', timeoutMs: 60000 })
  out.live = { ...live.data.view }
  out.liveRaw = { energy_wh: live.latest.energy_wh, cost_fen: live.latest.cost_fen,
    power_w: live.latest.power_w, remaining_s: live.latest.remaining_s }
  const stopped = await live.onStop()
  check(stopped, 'stop was refused')
  await rt.until(() => wx.log.nav.some((n) => n.type === 'redirectTo' && n.url.startsWith('/pages/receipt/')),
    { what: 'the receipt after the pile settles', timeoutMs: 60000 })
  live.onUnload()

  const receipt = await rt.openPage(lastNav('redirectTo').url)
  await rt.until(() => receipt.data.view && receipt.data.view.final, { what: 'the receipt' })
  receipt.onUnload()
  out.session_id = sessionId
  out.receipt = { ...receipt.data.view }

  const history = await rt.openPage('/pages/history/history')
  out.history = history.data.rows.slice(0, 3)
  const accountId = wallet.data.accounts[0].id
  const statement = await rt.openPage(`/pages/transactions/transactions?account_id=${accountId}`)
  out.statement = statement.data.rows.map((r) => `${r.title} ${r.amount}`)
  const walletAfter = await rt.openPage('/pages/wallet/wallet')
  out.wallet.end = walletAfter.data.total
  out.account_id = accountId

  if (env.EVC_PHONE_CODE) { // WeChat's getPhoneNumber button on the "me" tab
    const me = await rt.openPage('/pages/me/me')
    check(!me.data.user.phone, 'no phone bound yet')
    await me.onGetPhoneNumber({ detail: { code: env.EVC_PHONE_CODE } })
    out.me = { phone: me.data.user.phone, toast: wx.log.toasts[wx.log.toasts.length - 1] }
  }
}

async function operator(out) {
  const login = await rt.openPage('/pages/ops/login/login')
  login.setData({ username: env.EVC_STAFF_USER, password: env.EVC_STAFF_PASSWORD })
  check(await login.onSubmit(), `staff log-in: ${login.data.error}`)
  check(lastNav('reLaunch').url === '/pages/ops/index/index', 'to the operators\' home')
  const home = await rt.openPage('/pages/ops/index/index')
  check(!home.data.error, `operators' home: ${home.data.error}`)
  out.role = home.data.role
  out.today = home.data.today
  out.status = home.data.status
  const communityId = home.data.communities[home.data.communityIndex].id

  const piles = await rt.openPage(`/pages/ops/piles/piles?community_id=${communityId}`)
  await rt.until(() => piles.data.piles.length, { what: 'the piles list' })
  piles.onUnload()
  out.piles = piles.data.piles.map((p) => ({ serial: p.serial, onlineText: p.onlineText,
    ports: p.ports.map((x) => x.statusText) }))

  const topup = await rt.openPage(`/pages/ops/topup/topup?community_id=${communityId}`)
  const target = topup.data.all.find((a) => a.fullNo === env.EVC_ACCOUNT_NO)
  check(target, 'the resident\'s account is in the operator\'s list')
  topup.onSelect({ currentTarget: { dataset: { id: target.id } } })
  topup.setData({ amountText: '10', memo: '小程序现金充值' })
  const credited = await topup.onSubmit()
  check(credited && credited.applied, `cash top-up: ${topup.data.error}`)
  out.cash = { done: topup.data.done, available_fen: credited.balance.available_fen }

  const tariff = await rt.openPage(`/pages/ops/tariff/tariff?community_id=${communityId}`)
  out.tariff = tariff.data.current

  rt.emit('need_alarm', {})
  await rt.receive('alarm_raised', 30000)
  const incidents = await rt.openPage(`/pages/ops/incidents/incidents?community_id=${communityId}`)
  await rt.until(async () => {
    await incidents.load()
    return incidents.data.rows.length
  }, { what: 'the incident on the incidents page', interval: 300 })
  const row = incidents.data.rows[0]
  out.incident = { id: row.id, title: row.title, severityText: row.severityText, before: row.stateText }
  await incidents.onAck({ currentTarget: { dataset: { id: row.id } } })
  const acked = incidents.data.rows.find((r) => r.id === row.id)
  check(acked && acked.state === 'acknowledged', `acknowledge: ${incidents.data.error}`)
  await incidents.onResolve({ currentTarget: { dataset: { id: row.id } } })
  check(!incidents.data.rows.some((r) => r.id === row.id), `resolve: ${incidents.data.error}`)
  out.incident.toasts = wx.log.toasts.slice(-2)
}

async function main() {
  const out = { resident: {}, operator: null }
  await resident(out.resident)
  if (env.EVC_STAFF_USER) {
    out.operator = {}
    await operator(out.operator)
  }
  const spec = await (await fetch(`${config.baseUrl.replace(/\/+$/, '')}/api/openapi.json`)).json()
  const contract = checkAll(spec, api.ENDPOINTS, config.apiPrefix)
  out.contract = { errors: contract.errors, pending: contract.pending.map((p) => p.field
    ? `${p.name}.${p.field}` : `${p.method} ${p.path}`) }
  out.requests = { total: wx.log.requests.length,
    failed: wx.log.requests.filter((r) => r.status === 0 || r.status >= 500).map((r) => `${r.method} ${r.url} ${r.status}`) }
  rt.emit('result', out)
}

main().then(() => process.exit(0), (err) => {
  rt.emit('error', { message: err.message, stack: err.stack, nav: wx.log.nav,
    requests: wx.log.requests.slice(-10) })
  process.exit(1)
})
