// Every test starts with a fresh fake `wx` (tests replace or extend it as they need).
const { createWx } = require('./wx-mock')

global.wx = createWx()
