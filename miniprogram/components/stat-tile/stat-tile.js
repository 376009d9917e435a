/** A figure with its label and unit: "功率 180 W". Values arrive already formatted. */
Component({
  properties: {
    label: { type: String, value: '' },
    value: { type: String, value: '--' },
    unit: { type: String, value: '' },
    big: { type: Boolean, value: false },
  },
})
