/**
 * The app: installs the login handler, logs a resident in silently at launch, and sends
 * a QR scan that opened the mini-program (普通链接二维码 → /q/{code}) to the port page.
 */
const auth = require('./utils/auth')
const qr = require('./utils/qr')

App({
  globalData: {},

  onLaunch(options) {
    auth.install()
    auth.ensureLogin().catch(() => {
      // no network or server down: pages retry through the API client
    })
    const code = qr.portCodeFromLaunch(options && options.query)
    if (code && options.path !== 'pages/port/port') {
      wx.navigateTo({ url: `/pages/port/port?code=${code}` })
    }
  },
})
