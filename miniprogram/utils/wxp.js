/** Small promise wrappers over wx.* callbacks used by the pages. */

function promisify(fn) {
  return (options = {}) => new Promise((resolve, reject) => {
    fn({ ...options, success: resolve, fail: reject })
  })
}

function scanCode() {
  return promisify(wx.scanCode)({ onlyFromCamera: false, scanType: ['qrCode'] })
}

function getLocation() {
  return promisify(wx.getLocation)({ type: 'gcj02' })
}

function requestPayment(params) {
  return promisify(wx.requestPayment)(params)
}

/** Resolves true when the person tapped OK. */
function confirm(title, content, confirmText = '确定') {
  return new Promise((resolve) => {
    wx.showModal({ title, content, confirmText, success: (res) => resolve(!!res.confirm),
      fail: () => resolve(false) })
  })
}

function toast(title, icon = 'none') {
  wx.showToast({ title, icon, duration: 2000 })
}

function isCancel(err) {
  return !!(err && err.errMsg && /cancel/i.test(err.errMsg))
}

module.exports = { promisify, scanCode, getLocation, requestPayment, confirm, toast, isCancel }
