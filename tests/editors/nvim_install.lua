-- Neovim without the server: :checkhealth qwen_lsp names the command that installs it, and
-- :QwenInstall runs that command in a terminal split (stopped at once: the install itself is
-- what scripts/install.sh's users run anyway). Run with
-- `nvim --headless -u NONE -i NONE -c 'luafile nvim_install.lua'`; writes JSON to QWEN_E2E_RESULT.
local env = vim.env
local api = vim.api
local result = { messages = {} }
vim.notify = function(message)
  table.insert(result.messages, message)
end

local ok, err = pcall(function()
  vim.opt.runtimepath:prepend(env.QWEN_E2E_PLUGIN)
  local install = require('qwen_lsp.install')
  require('qwen_lsp').setup({})
  vim.cmd('checkhealth qwen_lsp')
  result.health = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
  result.venv = install.venv()
  result.command = install.command()
  vim.cmd('QwenInstall')
  result.terminal = vim.bo.buftype == 'terminal' and vim.b.qwen_install == true
  local job = vim.bo.channel
  result.argv = api.nvim_get_chan_info(job).argv
  vim.fn.jobstop(job)
  vim.fn.jobwait({ job }, 5000)
  result.terminal_text = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
end)
result.error = not ok and tostring(err) or nil
local file = assert(io.open(env.QWEN_E2E_RESULT, 'w'))
file:write(vim.json.encode(result))
file:close()
vim.cmd('qall!')
