const errors = require('../../utils/errors')

test('codes become plain Chinese; the reason refines a 409', () => {
  expect(errors.messageFor('insufficient_funds')).toBe('余额不足，请先充值')
  expect(errors.messageFor('conflict', { reason: 'pile_offline' })).toBe('充电桩离线，请换一个充电桩')
  expect(errors.messageFor('conflict', { reason: 'nack:not_plugged' })).toBe('请先插好插头，再扫码充电')
  expect(errors.messageFor('conflict', { reason: 'nack:something_new' })).toBe('充电桩拒绝启动，请换一个插座')
  expect(errors.messageFor('conflict', { reason: 'unknown_reason' })).toBe(errors.CODE_TEXT.conflict)
  expect(errors.messageFor('never_heard_of')).toBe(errors.FALLBACK)
})

test('every message is Chinese, never the server English', () => {
  const all = [...Object.values(errors.CODE_TEXT), ...Object.values(errors.REASON_TEXT)]
  all.forEach((text) => expect(text).toMatch(/[\u4e00-\u9fff]/))
})

test('from a response body', () => {
  const e = errors.fromResponse(409, { code: 'conflict', message: 'the port is in use',
    details: { reason: 'port_busy' } })
  expect(e).toBeInstanceOf(errors.ApiError)
  expect(e.status).toBe(409)
  expect(e.code).toBe('conflict')
  expect(e.reason).toBe('port_busy')
  expect(e.message).toBe('该插座正在使用中，请换一个插座')
  expect(e.serverMessage).toBe('the port is in use')
})

test('from bodies that are not ours (proxy pages, empty)', () => {
  expect(errors.fromResponse(502, '<html>Bad gateway</html>').code).toBe('internal_error')
  expect(errors.fromResponse(404, '').code).toBe('not_found')
  expect(errors.fromResponse(401, null).code).toBe('unauthenticated')
  expect(errors.fromResponse(400, undefined).code).toBe('bad_request')
})

test('network failures', () => {
  expect(errors.fromNetwork({ errMsg: 'request:fail timeout' }).code).toBe('timeout')
  expect(errors.fromNetwork({ errMsg: 'request:fail' }).code).toBe('network')
  expect(errors.userMessage(errors.fromNetwork({ errMsg: 'x' }))).toBe(errors.CODE_TEXT.network)
  expect(errors.userMessage({ errMsg: 'requestPayment:fail cancel' })).toBe('已取消')
  expect(errors.userMessage(new Error('boom'))).toBe(errors.FALLBACK)
})

test('a visitor who paid but whose port could not start hears why, and of the refund', () => {
  expect(errors.reasonText('paid_but_port_busy'))
    .toBe('该插座正在使用中，请换一个插座；已支付的金额将原路退回')
  expect(errors.reasonText('paid_but_nack:fault')).toBe('插座故障，请换一个插座；已支付的金额将原路退回')
  expect(errors.reasonText('paid_but_conflict')).toBe('充电桩未能启动；已支付的金额将原路退回')
})
