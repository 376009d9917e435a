/**
 * What a scanned QR code means. A port's sticker carries `{PUBLIC_BASE_URL}/q/{code}`
 * (app/services/places.py port_qr_payload); codes are 4–16 letters and digits.
 */

const CODE = /^[A-Za-z0-9]{4,16}$/

/** The port code in a scan result (a URL ending in /q/CODE, or the bare code), or null. */
function portCodeFrom(text) {
  if (typeof text !== 'string') return null
  const s = text.trim()
  if (!s) return null
  if (CODE.test(s)) return s.toUpperCase()
  const noFragment = s.split('#')[0]
  const noQuery = noFragment.split('?')[0]
  const m = /\/q\/([A-Za-z0-9]{4,16})\/?$/.exec(noQuery)
  return m ? m[1].toUpperCase() : null
}

/**
 * The port code from wx.scanCode's result, or from the page's launch options when the
 * mini-program was opened by scanning the sticker with WeChat itself (普通链接二维码:
 * the URL arrives URL-encoded in `q`).
 */
function portCodeFromScan(res) {
  if (!res) return null
  return portCodeFrom(res.result) || portCodeFrom(res.path ? decodeURIComponent(res.path) : '')
}

function portCodeFromLaunch(query) {
  if (!query) return null
  if (query.code) return portCodeFrom(String(query.code))
  if (query.q) return portCodeFrom(decodeURIComponent(String(query.q)))
  return null
}

module.exports = { portCodeFrom, portCodeFromScan, portCodeFromLaunch }
