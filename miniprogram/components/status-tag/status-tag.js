/** A coloured tag for a status; `status` picks the colour, `text` is shown. */
const TONE = {
  idle: 'ok', plugged: 'ok', active: 'ok', charging: 'busy', full: 'ok', settled: 'muted',
  starting: 'busy', stopping: 'busy', pending_payment: 'warn', failed: 'bad', fault: 'bad',
  offline: 'muted', online: 'ok', open: 'bad', acknowledged: 'warn', resolved: 'muted',
  critical: 'bad', major: 'warn', minor: 'muted', blocked: 'bad',
}

Component({
  properties: {
    status: { type: String, value: '' },
    text: { type: String, value: '' },
  },
  data: { tone: 'muted' },
  observers: {
    status(value) {
      this.setData({ tone: TONE[value] || 'muted' })
    },
  },
})
