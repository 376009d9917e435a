/**
 * A minimal mini-program runtime in plain Node, for driving the real pages against the
 * real server: `Component()` / `App()` capture definitions, pages are instantiated with
 * `data` and `setData` (dotted paths), and a `wx` shim does real HTTP (Node's fetch) to
 * the server, keeps storage in memory, records navigation, and hands the moments a person
 * (or WeChat) would act — paying — to the test harness through JSON lines on stdio.
 *
 * No DOM: what a page shows is its `data`, which the WXML only lays out (the rendering
 * tests under tests/render check the templates).
 */
const path = require('path')
const readline = require('readline')

const ROOT = path.join(__dirname, '../..')

// --- stdio protocol ----------------------------------------------------------------------

function emit(event, payload = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...payload })}\n`)
}

const inbox = []
const waiters = []
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let msg
  try {
    msg = JSON.parse(line)
  } catch (e) {
    return
  }
  const i = waiters.findIndex((w) => w.event === msg.event)
  if (i >= 0) waiters.splice(i, 1)[0].resolve(msg)
  else inbox.push(msg)
})

/** The next message `event` from the harness (stdin). */
function receive(event, timeoutMs = 60000) {
  const i = inbox.findIndex((m) => m.event === event)
  if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0])
  return new Promise((resolve, reject) => {
    const waiter = { event, resolve }
    waiters.push(waiter)
    setTimeout(() => {
      const at = waiters.indexOf(waiter)
      if (at >= 0) {
        waiters.splice(at, 1)
        reject(new Error(`no "${event}" from the harness within ${timeoutMs} ms`))
      }
    }, timeoutMs).unref()
  })
}

// --- wx ----------------------------------------------------------------------------------

async function httpRequest(o) {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), o.timeout || 20000)
  try {
    const init = { method: o.method || 'GET', headers: o.header || {}, signal: controller.signal }
    if (o.data !== undefined && init.method !== 'GET') init.body = JSON.stringify(o.data)
    const res = await fetch(o.url, init)
    const text = await res.text()
    let data = text
    if ((res.headers.get('content-type') || '').includes('json') && text) data = JSON.parse(text)
    return { statusCode: res.status, data, header: Object.fromEntries(res.headers) }
  } finally {
    clearTimeout(timer)
  }
}

function createWx({ loginCodes = [], scanResults = [], location = null } = {}) {
  const storage = {}
  const log = { nav: [], toasts: [], modals: [], requests: [], payments: [], subscribes: [] }
  const codes = [...loginCodes]
  const scans = [...scanResults]
  const wx = {
    log,
    request(o) {
      const started = Date.now()
      httpRequest(o).then((res) => {
        log.requests.push({ method: o.method, url: o.url, status: res.statusCode, ms: Date.now() - started })
        o.success && o.success(res)
      }, (err) => {
        log.requests.push({ method: o.method, url: o.url, status: 0, error: String(err) })
        const timeout = err && err.name === 'AbortError'
        o.fail && o.fail({ errMsg: `request:fail ${timeout ? 'timeout' : err.message}` })
      })
    },
    getStorageSync: (k) => (k in storage ? storage[k] : ''),
    setStorageSync: (k, v) => { storage[k] = JSON.parse(JSON.stringify(v)) },
    removeStorageSync: (k) => { delete storage[k] },
    login(o) {
      const code = codes.shift()
      if (code) o.success({ code, errMsg: 'login:ok' })
      else o.fail({ errMsg: 'login:fail no code left' })
    },
    scanCode(o) {
      const result = scans.shift()
      if (result) o.success({ result, scanType: 'QR_CODE', charSet: 'utf-8', errMsg: 'scanCode:ok' })
      else o.fail({ errMsg: 'scanCode:fail cancel' })
    },
    getLocation(o) {
      if (location) o.success({ latitude: location.lat, longitude: location.lng, errMsg: 'getLocation:ok' })
      else o.fail({ errMsg: 'getLocation:fail auth deny' })
    },
    openLocation(o) { log.nav.push({ type: 'openLocation', url: `${o.latitude},${o.longitude}` }) },
    /** WeChat's cashier: the harness pays (sends the signed notification) and says so. */
    requestPayment(o) {
      log.payments.push(o)
      emit('pay', { package: o.package })
      receive('paid', 60000).then((msg) => {
        if (msg.ok) o.success && o.success({ errMsg: 'requestPayment:ok' })
        else o.fail && o.fail({ errMsg: 'requestPayment:fail cancel' })
      }, (err) => o.fail && o.fail({ errMsg: `requestPayment:fail ${err.message}` }))
    },
    requestSubscribeMessage(o) {
      const res = { errMsg: 'requestSubscribeMessage:ok' }
      o.tmplIds.forEach((id) => { res[id] = 'accept' })
      log.subscribes.push(o.tmplIds)
      o.success && o.success(res)
    },
    navigateTo: (o) => log.nav.push({ type: 'navigateTo', url: o.url }),
    redirectTo: (o) => log.nav.push({ type: 'redirectTo', url: o.url }),
    switchTab: (o) => log.nav.push({ type: 'switchTab', url: o.url }),
    reLaunch: (o) => log.nav.push({ type: 'reLaunch', url: o.url }),
    navigateBack: () => log.nav.push({ type: 'navigateBack', url: '' }),
    showModal(o) {
      log.modals.push({ title: o.title, content: o.content })
      o.success && o.success({ confirm: true, cancel: false, content: o.editable ? '已现场处理' : undefined })
    },
    showToast: (o) => log.toasts.push(o.title),
    showLoading: () => {},
    hideLoading: () => {},
    stopPullDownRefresh: () => {},
  }
  return wx
}

// --- pages -------------------------------------------------------------------------------

const definitions = {}
let capturing = null

global.Component = (def) => {
  if (capturing) definitions[capturing] = def
}
global.App = (def) => {
  definitions.__app__ = def
}
global.getApp = () => definitions.__app__ || {}

function setPath(target, key, value) {
  const parts = key.replace(/\[(\d+)\]/g, '.$1').split('.')
  let node = target
  for (let i = 0; i < parts.length - 1; i += 1) {
    if (node[parts[i]] == null || typeof node[parts[i]] !== 'object') node[parts[i]] = {}
    node = node[parts[i]]
  }
  node[parts[parts.length - 1]] = value
}

function parseUrl(url) {
  const [route, qs] = url.replace(/^\//, '').split('?')
  const query = {}
  ;(qs || '').split('&').filter(Boolean).forEach((pair) => {
    const [k, v = ''] = pair.split('=')
    query[decodeURIComponent(k)] = v // the framework hands query values still encoded
  })
  return { route, query }
}

/** A page instance for `url` ("/pages/port/port?code=…"); onLoad and onShow called. */
async function openPage(url) {
  const { route, query } = parseUrl(url)
  if (!definitions[route]) {
    capturing = route
    try {
      require(path.join(ROOT, route))
    } finally {
      capturing = null
    }
  }
  const def = definitions[route]
  if (!def) throw new Error(`${route} did not call Component()`)
  const page = { route, data: JSON.parse(JSON.stringify(def.data || {})) }
  page.setData = (patch, cb) => {
    Object.keys(patch).forEach((k) => setPath(page.data, k, patch[k]))
    if (cb) cb()
  }
  Object.entries(def.methods || {}).forEach(([name, fn]) => { page[name] = fn.bind(page) })
  if (page.onLoad) await page.onLoad(query)
  if (page.onShow) await page.onShow()
  return page
}

function launchApp(options) {
  require(path.join(ROOT, 'app.js'))
  const app = definitions.__app__
  app.onLaunch(options || { path: 'pages/index/index', query: {} })
  return app
}

// --- waiting -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function until(check, { timeoutMs = 30000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(interval)
  }
}

module.exports = { ROOT, emit, receive, createWx, openPage, launchApp, parseUrl, until, sleep }
