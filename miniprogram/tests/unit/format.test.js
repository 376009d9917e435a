const fmt = require('../../utils/format')

describe('money in fen shown as yuan', () => {
  test.each([
    [0, '0.00'], [1, '0.01'], [10, '0.10'], [99, '0.99'], [100, '1.00'], [1234, '12.34'],
    [-5, '-0.05'], [-1234, '-12.34'], [123456789, '1234567.89'],
  ])('%d fen → %s', (fen, text) => {
    expect(fmt.yuan(fen)).toBe(text)
  })

  test('non-integers are never formatted as money', () => {
    expect(fmt.yuan(1.5)).toBe('--')
    expect(fmt.yuan(null)).toBe('--')
    expect(fmt.yuan(undefined)).toBe('--')
    expect(fmt.yuan('100')).toBe('--')
  })

  test('money, signed', () => {
    expect(fmt.money(250)).toBe('¥2.50')
    expect(fmt.signedYuan(250)).toBe('+2.50')
    expect(fmt.signedYuan(-250)).toBe('-2.50')
    expect(fmt.signedYuan(0)).toBe('0.00')
  })

  test('typed yuan parse to integer fen as text, not floats', () => {
    expect(fmt.parseYuan('12')).toBe(1200)
    expect(fmt.parseYuan('12.3')).toBe(1230)
    expect(fmt.parseYuan('12.30')).toBe(1230)
    expect(fmt.parseYuan(' 0.07 ')).toBe(7)
    expect(fmt.parseYuan('0.29')).toBe(29) // 0.29 * 100 is 28.999999999999996 in floats
    expect(fmt.parseYuan('1.005')).toBeNull()
    expect(fmt.parseYuan('-1')).toBeNull()
    expect(fmt.parseYuan('1e3')).toBeNull()
    expect(fmt.parseYuan('')).toBeNull()
    expect(fmt.parseYuan('abc')).toBeNull()
    expect(fmt.parseYuan('12.')).toBe(1200)
  })

  test('every fen amount round-trips through yuan text', () => {
    for (let fen = 0; fen < 5000; fen += 7) expect(fmt.parseYuan(fmt.yuan(fen))).toBe(fen)
  })
})

describe('durations, power, energy, distance', () => {
  test('durations', () => {
    expect(fmt.duration(0)).toBe('0秒')
    expect(fmt.duration(45)).toBe('45秒')
    expect(fmt.duration(750)).toBe('12分30秒')
    expect(fmt.duration(3900)).toBe('1小时05分')
    expect(fmt.duration(36000)).toBe('10小时00分')
    expect(fmt.duration(null)).toBe('--')
    expect(fmt.duration(-1)).toBe('--')
    expect(fmt.clock(3909)).toBe('01:05:09')
    expect(fmt.clock(undefined)).toBe('--:--:--')
  })

  test('power', () => {
    expect(fmt.power(0)).toBe('0 W')
    expect(fmt.power(180)).toBe('180 W')
    expect(fmt.power(999)).toBe('999 W')
    expect(fmt.power(1000)).toBe('1.00 kW')
    expect(fmt.power(1254)).toBe('1.25 kW')
    expect(fmt.power(1255)).toBe('1.26 kW')
    expect(fmt.power(null)).toBe('--')
  })

  test('energy in kWh (度), rounded half up', () => {
    expect(fmt.energy(0)).toBe('0.00 度')
    expect(fmt.energy(4)).toBe('0.00 度')
    expect(fmt.energy(5)).toBe('0.01 度')
    expect(fmt.energy(1234)).toBe('1.23 度')
    expect(fmt.energy(1235)).toBe('1.24 度')
    expect(fmt.energy(-1)).toBe('--')
  })

  test('distance', () => {
    expect(fmt.distance(0)).toBe('0 米')
    expect(fmt.distance(849.6)).toBe('850 米')
    expect(fmt.distance(1234)).toBe('1.2 公里')
    expect(fmt.distance(9960)).toBe('10.0 公里')
    expect(fmt.distance(12345)).toBe('12 公里')
    expect(fmt.distance(null)).toBe('')
    expect(fmt.distance(NaN)).toBe('')
  })
})

describe('times are Beijing wall-clock, whatever the device zone', () => {
  test('ISO to Beijing', () => {
    expect(fmt.dateTime('2025-11-24T10:34:56+00:00')).toBe('2025-11-24 18:34')
    expect(fmt.dateTime('2025-11-24T17:00:00Z')).toBe('2025-11-25 01:00')
    expect(fmt.shortDateTime('2025-11-24T10:34:56+08:00')).toBe('11-24 10:34')
    expect(fmt.dateTime(null)).toBe('--')
    expect(fmt.dateTime('nonsense')).toBe('--')
  })

  test('Beijing day', () => {
    expect(fmt.beijingDay('2025-11-24T15:59:59Z')).toBe('2025-11-24')
    expect(fmt.beijingDay('2025-11-24T16:00:00Z')).toBe('2025-11-25')
    expect(fmt.beijingDay(Date.parse('2025-11-24T16:00:00Z'))).toBe('2025-11-25')
  })

  test('masking', () => {
    expect(fmt.maskNumber('13900000001')).toBe('139****0001')
    expect(fmt.maskNumber('12345')).toBe('12345')
  })
})
