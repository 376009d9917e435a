/**
 * Logging in: residents silently with wx.login → POST /auth/wechat-login; staff with a
 * username and password. Installs itself as the API client's login handler, so a dead
 * token re-logs a resident in without asking, and sends staff to the log-in page.
 */
const api = require('./api')

const MODE_KEY = 'evc.mode' // 'resident' (default) or 'staff'
const STAFF_ROLES = ['platform_admin', 'power_company', 'property_operator']
const MANAGER_ROLES = ['platform_admin', 'property_operator']

function mode() {
  try {
    return wx.getStorageSync(MODE_KEY) || 'resident'
  } catch (e) {
    return 'resident'
  }
}

function setMode(value) {
  try {
    wx.setStorageSync(MODE_KEY, value)
  } catch (e) { /* ignore */ }
}

function wxLoginCode() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res && res.code ? resolve(res.code)
        : reject(new Error('wx.login gave no code'))),
      fail: reject,
    })
  })
}

let residentInFlight = null

/** wx.login → server tokens (once at a time). */
function residentLogin() {
  if (!residentInFlight) {
    residentInFlight = (async () => {
      const code = await wxLoginCode()
      const body = await api.wechatLogin(code)
      api.setTokens(body)
      setMode('resident')
      return body
    })().finally(() => {
      residentInFlight = null
    })
  }
  return residentInFlight
}

async function staffLogin(username, password) {
  const body = await api.staffLogin(username, password)
  if (!isStaff(body.role)) {
    throw new Error('not a staff account')
  }
  api.setTokens(body)
  setMode('staff')
  return body
}

/** The API client's handler when there is no usable token. */
async function silentLogin() {
  if (mode() === 'staff') {
    if (typeof wx.navigateTo === 'function') wx.navigateTo({ url: '/pages/ops/login/login' })
    return false
  }
  await residentLogin()
  return true
}

/** Make sure someone is logged in (residents: silently). */
async function ensureLogin() {
  if (api.isLoggedIn()) return api.getTokens()
  if (mode() === 'staff') return null
  return residentLogin()
}

/** Log out on the server too (revokes both tokens); back to resident mode. */
async function logout() {
  try {
    if (api.isLoggedIn()) await api.logout()
  } catch (e) { /* the tokens are dropped anyway */ }
  api.clearTokens()
  setMode('resident')
}

function isStaff(role) {
  return STAFF_ROLES.includes(role)
}

function canManage(role) {
  return MANAGER_ROLES.includes(role)
}

function install() {
  api.setLoginHandler(silentLogin)
}

module.exports = { install, residentLogin, staffLogin, silentLogin, ensureLogin, logout, mode,
  setMode, isStaff, canManage, STAFF_ROLES, MANAGER_ROLES }
