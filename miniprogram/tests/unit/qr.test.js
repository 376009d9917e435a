const qr = require('../../utils/qr')

test('a sticker URL gives its port code', () => {
  expect(qr.portCodeFrom('https://ev.example.com/q/AB12CD34EF')).toBe('AB12CD34EF')
  expect(qr.portCodeFrom('http://127.0.0.1:5000/q/ab12cd34ef')).toBe('AB12CD34EF')
  expect(qr.portCodeFrom('https://ev.example.com/q/AB12CD34EF/')).toBe('AB12CD34EF')
  expect(qr.portCodeFrom('https://ev.example.com/q/AB12CD34EF?from=sticker#x')).toBe('AB12CD34EF')
  expect(qr.portCodeFrom('  AB12CD34EF ')).toBe('AB12CD34EF')
})

test('anything else is not a port', () => {
  expect(qr.portCodeFrom('https://example.com/other/AB12CD34EF')).toBeNull()
  expect(qr.portCodeFrom('https://ev.example.com/q/AB-12')).toBeNull()
  expect(qr.portCodeFrom('https://ev.example.com/q/A')).toBeNull()
  expect(qr.portCodeFrom('https://ev.example.com/q/ABCDEFGHIJKLMNOPQ')).toBeNull()
  expect(qr.portCodeFrom('')).toBeNull()
  expect(qr.portCodeFrom(null)).toBeNull()
  expect(qr.portCodeFrom('WIFI:S:home;T:WPA;P:secret;;')).toBeNull()
})

test('scan results and launch options', () => {
  expect(qr.portCodeFromScan({ result: 'https://x.cn/q/ZZ99ZZ99' })).toBe('ZZ99ZZ99')
  expect(qr.portCodeFromScan({ result: '', path: encodeURIComponent('pages/port/port?x=1') })).toBeNull()
  expect(qr.portCodeFromScan(null)).toBeNull()
  expect(qr.portCodeFromLaunch({ code: 'zz99zz99' })).toBe('ZZ99ZZ99')
  expect(qr.portCodeFromLaunch({ q: encodeURIComponent('https://x.cn/q/ZZ99ZZ99') })).toBe('ZZ99ZZ99')
  expect(qr.portCodeFromLaunch({})).toBeNull()
  expect(qr.portCodeFromLaunch(undefined)).toBeNull()
})
