-- The init file of the Neovim that nvim_tui.lua runs in a terminal: the plugin, its server, and a
-- status line that says when the server is attached (the driver reads the screen).
vim.opt.runtimepath:prepend(vim.env.QWEN_E2E_PLUGIN)
vim.cmd('filetype on')
vim.o.shadafile = 'NONE'
require('qwen_lsp').setup({
  cmd = { vim.env.QWEN_E2E_PYTHON, '-I', '-m', 'qwen_lsp', 'serve' },
  settings = { model = vim.env.QWEN_E2E_MODEL, explainMaxTokens = 80 },
  ghost_text = { enabled = false }, -- this test is about the menu
})
vim.o.statusline = [[%f %{luaeval('require("qwen_lsp").client(0) and "[qwen attached]" or ""')}]]
vim.api.nvim_create_autocmd('LspAttach', { command = 'redrawstatus' })
