/**
 * A fake `wx` for unit and rendering tests: in-memory storage, recorded navigation and
 * toasts, and `request` answered by a handler the test sets (no network).
 */
function createWx({ handler } = {}) {
  const storage = {}
  const calls = { navigateTo: [], redirectTo: [], switchTab: [], reLaunch: [], toasts: [],
    requests: [], modals: [], navigateBack: 0, openLocation: [] }
  const wx = {
    calls,
    storage,
    handler: handler || (() => ({ statusCode: 404, data: { code: 'not_found', message: '', details: {} } })),
    modalAnswer: true,
    getStorageSync: (k) => (k in storage ? storage[k] : ''),
    setStorageSync: (k, v) => { storage[k] = v },
    removeStorageSync: (k) => { delete storage[k] },
    request(options) {
      calls.requests.push(options)
      Promise.resolve().then(() => wx.handler(options)).then((res) => {
        if (res && res.fail) options.fail(res.fail)
        else options.success({ statusCode: res.statusCode, data: res.data === undefined ? '' : res.data, header: {} })
      }, (err) => options.fail({ errMsg: `request:fail ${err && err.message}` }))
    },
    login: (o) => o.success({ code: 'test-code' }),
    navigateTo: (o) => calls.navigateTo.push(o.url),
    redirectTo: (o) => calls.redirectTo.push(o.url),
    switchTab: (o) => calls.switchTab.push(o.url),
    reLaunch: (o) => calls.reLaunch.push(o.url),
    navigateBack: () => { calls.navigateBack += 1 },
    showToast: (o) => calls.toasts.push(o.title),
    showLoading: () => {},
    hideLoading: () => {},
    stopPullDownRefresh: () => {},
    showModal: (o) => {
      calls.modals.push(o)
      const res = { confirm: !!wx.modalAnswer, cancel: !wx.modalAnswer, content: o.editable ? 'fixed' : undefined }
      if (o.success) o.success(res)
    },
    scanCode: (o) => o.fail({ errMsg: 'scanCode:fail cancel' }),
    getLocation: (o) => o.fail({ errMsg: 'getLocation:fail auth deny' }),
    openLocation: (o) => calls.openLocation.push(o),
    requestPayment: (o) => o.success({ errMsg: 'requestPayment:ok' }),
    requestSubscribeMessage: (o) => o.success({ errMsg: 'requestSubscribeMessage:ok' }),
  }
  return wx
}

/** A handler from a table {"GET /api/v1/...": body | (options) => {statusCode, data}}. */
function routes(table) {
  return (options) => {
    const path = options.url.replace(/^https?:\/\/[^/]+/, '').split('?')[0]
    const key = `${options.method} ${path}`
    if (!(key in table)) {
      return { statusCode: 404, data: { code: 'not_found', message: `no route ${key}`, details: {} } }
    }
    const answer = table[key]
    if (typeof answer === 'function') return answer(options)
    return { statusCode: options.method === 'POST' ? 201 : 200, data: answer }
  }
}

module.exports = { createWx, routes }
