/**
 * The ONE place server error codes become plain Chinese for users.
 *
 * The server always answers errors as {"code", "message", "details"} (app/api/errors.py);
 * `details.reason` refines a 409 (why a charge could not start). The server's English
 * `message` is kept on the error for logs, never shown.
 */
const CODE_TEXT = {
  network: '网络连接失败，请检查网络后重试',
  timeout: '请求超时，请稍后重试',
  bad_request: '请求格式有误，请更新小程序后重试',
  validation_error: '填写的内容有误，请检查后重试',
  invalid_input: '填写的内容不符合要求，请检查后重试',
  not_found: '没有找到相关内容，可能已被删除或无权查看',
  unauthenticated: '请先登录',
  token_expired: '登录已过期，请重新登录',
  token_revoked: '登录已失效，请重新登录',
  invalid_token: '登录状态无效，请重新登录',
  forbidden: '您没有权限进行此操作',
  conflict: '当前状态不允许此操作，请刷新后重试',
  insufficient_funds: '余额不足，请先充值',
  idempotency_conflict: '重复的请求，请刷新后重试',
  account_locked: '密码错误次数过多，已临时锁定，请稍后再试',
  configuration_error: '服务暂不可用，请稍后再试',
  provider_unavailable: '支付服务暂时无响应，请稍后再试',
  upstream_unavailable: '服务暂时无响应，请稍后再试',
  provider_rejected: '支付平台拒绝了此订单，请稍后再试',
  method_not_allowed: '当前版本不支持此操作，请更新小程序',
  too_many_requests: '操作太频繁，请稍后再试',
  internal_error: '服务器开小差了，请稍后再试',
  unavailable: '此功能暂未开放',
}

// details.reason of a 409 (start refused, start failed) and of a failed session.
const REASON_TEXT = {
  pile_offline: '充电桩离线，请换一个充电桩',
  pile_disabled: '该充电桩暂停服务',
  port_busy: '该插座正在使用中，请换一个插座',
  account_blocked: '充电账户已被冻结，请联系物业',
  wrong_community: '该充电账户不能在此小区使用',
  ack_timeout: '充电桩没有响应，请稍后再试',
  'nack:not_plugged': '请先插好插头，再扫码充电',
  'nack:port_busy': '该插座正在使用中，请换一个插座',
  'nack:fault': '插座故障，请换一个插座',
  'nack:expired': '启动指令已过期，请重新扫码',
  'nack:invalid': '充电桩拒绝了启动指令，请重新扫码',
  'nack:unknown': '充电桩拒绝启动，请换一个插座',
}

const FALLBACK = '操作失败，请稍后再试'

function reasonText(reason) {
  if (!reason) return ''
  if (REASON_TEXT[reason]) return REASON_TEXT[reason]
  if (String(reason).startsWith('nack:')) return REASON_TEXT['nack:unknown']
  // a visitor's paid session that could not start: the server refunds the whole payment
  const paid = /^paid_but_(.+)$/.exec(String(reason))
  if (paid) return `${reasonText(paid[1]) || '充电桩未能启动'}；已支付的金额将原路退回`
  return ''
}

/** The Chinese sentence for an error body (or an ApiError). */
function messageFor(code, details) {
  const reason = details && details.reason
  const byReason = reasonText(reason)
  if (byReason) return byReason
  return CODE_TEXT[code] || FALLBACK
}

/** An error from the API client: `status` (0 for network), `code`, `message` (Chinese). */
class ApiError extends Error {
  constructor({ status = 0, code = 'network', details = {}, serverMessage = '' } = {}) {
    super(messageFor(code, details))
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.details = details || {}
    this.serverMessage = serverMessage
  }

  get reason() {
    return this.details.reason || null
  }
}

/** From a non-2xx response (status, body) to an ApiError, whatever the body looks like. */
function fromResponse(status, body) {
  if (body && typeof body === 'object' && typeof body.code === 'string') {
    return new ApiError({ status, code: body.code, details: body.details || {},
      serverMessage: body.message || '' })
  }
  const code = status === 404 ? 'not_found' : status === 401 ? 'unauthenticated'
    : status === 403 ? 'forbidden' : status === 429 ? 'too_many_requests'
      : status >= 500 ? 'internal_error' : 'bad_request'
  return new ApiError({ status, code })
}

/** From wx.request's fail callback ({errMsg}) to an ApiError. */
function fromNetwork(err) {
  const text = (err && err.errMsg) || String(err || '')
  const code = /timeout/i.test(text) ? 'timeout' : 'network'
  return new ApiError({ status: 0, code, serverMessage: text })
}

/** What to show for anything a page caught. */
function userMessage(err) {
  if (err instanceof ApiError) return err.message
  if (err && err.errMsg) {
    if (/cancel/i.test(err.errMsg)) return '已取消'
    return FALLBACK
  }
  return FALLBACK
}

module.exports = { ApiError, CODE_TEXT, REASON_TEXT, messageFor, reasonText, fromResponse,
  fromNetwork, userMessage, FALLBACK }
