/**
 * Choose one of a few amounts. `options` are [{fen, label}] (from utils/wallet.js
 * amountOptions); `selected` is the chosen fen (null allowed: "不限"). Emits
 * `change` with {fen, index}.
 */
Component({
  properties: {
    options: { type: Array, value: [] },
    selected: { type: null, value: null },
  },
  data: { selectedIndex: -1 },
  observers: {
    'options, selected'(options, selected) {
      const index = (options || []).findIndex((o) => o.fen === selected)
      this.setData({ selectedIndex: index })
    },
  },
  methods: {
    onPick(e) {
      const index = Number(e.currentTarget.dataset.index)
      const option = this.data.options[index]
      if (!option) return
      this.setData({ selectedIndex: index })
      this.triggerEvent('change', { fen: option.fen, index })
    },
  },
})
