const tariff = require('../../utils/tariff')

const FLAT = { mode: 'per_kwh', energy_fen_per_kwh: 60, service_fen_per_kwh: 40,
  max_session_minutes: 720, tz: 'Asia/Shanghai' }
const TOU = { mode: 'per_kwh', service_fen_per_kwh: 20, tou: [
  { start: '08:00', end: '22:00', name: 'peak', energy_fen_per_kwh: 80 },
  { start: '22:00', end: '08:00', name: 'valley', energy_fen_per_kwh: 30 }] }
const HOURLY = { mode: 'per_hour', fen_per_hour: 50, billing_unit_minutes: 30, free_minutes: 5,
  minimum_charge_fen: 20 }
const BANDS = { mode: 'power_tier', billing_unit_minutes: 60, power_bands: [
  { min_w: 0, max_w: 200, fen_per_hour: 30 }, { min_w: 200, max_w: 400, fen_per_hour: 50 }] }

test('describes each mode in plain Chinese', () => {
  expect(tariff.describe(FLAT)).toEqual(['1.00 元/度', '电费 0.60 元/度 + 服务费 0.40 元/度',
    '单次最长 12 小时'])
  expect(tariff.describe(TOU)).toEqual(['峰时 08:00–22:00：1.00 元/度', '谷时 22:00–08:00：0.50 元/度',
    '（含服务费 0.20 元/度）'])
  expect(tariff.describe(HOURLY)).toEqual(['0.50 元/小时', '每 30 分钟计费一次，不足按一次计',
    '前 5 分钟免费', '最低消费 0.20 元'])
  expect(tariff.describe(BANDS)).toEqual(['0–200 W：0.30 元/小时', '200–400 W：0.50 元/小时',
    '每 60 分钟计费一次，不足按一次计'])
  expect(tariff.describe(null)).toEqual([])
  expect(tariff.describe({ mode: 'per_kwh', energy_fen_per_kwh: 100, max_session_minutes: 90 }))
    .toEqual(['1.00 元/度', '单次最长 1 小时30 分钟'])
})

test('headline', () => {
  expect(tariff.headline(FLAT)).toBe('1.00 元/度')
  expect(tariff.headline(HOURLY)).toBe('0.50 元/小时')
  expect(tariff.headline(BANDS)).toBe('按功率分档计时')
  expect(tariff.headline(undefined)).toBe('资费以充电桩显示为准')
})

test('a visitor prepayment for a duration, integer fen, at least 1 yuan', () => {
  expect(tariff.prepayFor(HOURLY, 120)).toBe(100)
  expect(tariff.prepayFor(HOURLY, 61)).toBe(100) // ceil(50*61/60)=51 → at least 100
  expect(tariff.prepayFor({ mode: 'per_hour', fen_per_hour: 333 }, 61)).toBe(339)
  expect(tariff.prepayFor(BANDS, 240)).toBe(200)
  // 4 h at 400 W = 1600 Wh at the top price 1.00 yuan/kWh = 160 fen
  expect(tariff.prepayFor(FLAT, 240)).toBe(160)
  expect(tariff.prepayFor(TOU, 600)).toBe(400)
  expect(tariff.prepayFor(null, 60)).toBeNull()
  expect(tariff.prepayFor(FLAT, 0)).toBeNull()
  expect(Number.isInteger(tariff.prepayFor({ mode: 'per_kwh', energy_fen_per_kwh: 77 }, 97))).toBe(true)
})

test('the operator form round-trips simple tariffs', () => {
  const form = tariff.formFromRules(FLAT)
  expect(form).toMatchObject({ mode: 'per_kwh', energy_yuan: '0.60', service_yuan: '0.40', max_hours: '12' })
  expect(tariff.rulesFromForm(form).rules).toEqual({ mode: 'per_kwh', energy_fen_per_kwh: 60,
    service_fen_per_kwh: 40, max_session_minutes: 720 })
  const hourly = tariff.formFromRules(HOURLY)
  expect(tariff.rulesFromForm(hourly).rules).toEqual({ mode: 'per_hour', fen_per_hour: 50,
    billing_unit_minutes: 30, free_minutes: 5, minimum_charge_fen: 20 })
  expect(tariff.formFromRules(TOU)).toBeNull()
  expect(tariff.formFromRules(BANDS)).toBeNull()
})

test('the operator form refuses bad values with Chinese messages', () => {
  expect(tariff.rulesFromForm({ mode: 'per_kwh', energy_yuan: 'abc' }).error).toMatch(/电价/)
  expect(tariff.rulesFromForm({ mode: 'per_kwh', energy_yuan: '0.6', service_yuan: '-1' }).error).toMatch(/服务费/)
  expect(tariff.rulesFromForm({ mode: 'per_hour', hour_yuan: '1', unit_minutes: '0' }).error).toMatch(/计费单位/)
  expect(tariff.rulesFromForm({ mode: 'per_hour', hour_yuan: '1', max_hours: '100' }).error).toMatch(/最长/)
  expect(tariff.rulesFromForm({ mode: 'nonsense' }).error).toMatch(/计费方式/)
})

test('the version in force', () => {
  const versions = [
    { version: 3, effective_from: '2099-01-01T00:00:00Z' },
    { version: 2, effective_from: '2025-01-01T00:00:00Z' },
    { version: 1, effective_from: '2020-01-01T00:00:00Z' },
  ]
  expect(tariff.inForce(versions, Date.parse('2025-06-01T00:00:00Z')).version).toBe(2)
  expect(tariff.inForce(versions, Date.parse('2019-06-01T00:00:00Z'))).toBeNull()
})
