-- :checkhealth qwen_lsp — the editor, the server binary, the model and its speed.
local M = {}

local health = vim.health

local function check_running(client)
  local response = client:request_sync('qwen/status', {}, 5000)
  if not response or response.err then
    health.warn('qwen/status did not answer: ' .. vim.inspect(response and response.err or 'timeout'))
    return
  end
  local status = response.result
  local report = status.state == 'ready' and health.ok or health.warn
  report(('running server (client %d): %s, %s'):format(client.id, status.state or '?', status.message or ''))
  health.info('model: ' .. tostring(status.model))
  local last = status.recent and status.recent[#status.recent]
  if last then
    health.info(('latest request: %d prompt tokens (%d reused), %.0f ms reading, %d tokens at %.1f tokens/s'):format(
      last.prompt_tokens, last.reused_tokens, last.prompt_seconds * 1000, last.generated_tokens,
      last.generated_tokens / math.max(last.generation_seconds, 1e-9)))
  end
end

-- Without a running server, `qwen-lsp doctor` loads the model once and measures it.
local function check_doctor(cmd, model)
  local doctor = vim.deepcopy(cmd)
  if doctor[#doctor] == 'serve' then
    table.remove(doctor)
  end
  if model and model ~= '' then
    vim.list_extend(doctor, { '--model', model })
  end
  table.insert(doctor, 'doctor')
  health.info('running `' .. table.concat(doctor, ' ') .. '` (loads the model; a few seconds)')
  local ok, result = pcall(function()
    return vim.system(doctor, { text = true }):wait(120000)
  end)
  if not ok or result.code ~= 0 then
    health.error('qwen-lsp doctor failed', { ok and (result.stdout .. result.stderr) or tostring(result) })
    return
  end
  for line in vim.gsplit(vim.trim(result.stdout), '\n') do
    health.info(line)
  end
  health.ok('the model loads and runs')
end

function M.check()
  health.start('qwen_lsp')
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim 0.11 or newer is needed')
  end
  local qwen = require('qwen_lsp')
  local engine = qwen.native_ghost_text() and 'vim.lsp.inline_completion' or 'extmark fallback'
  health.info('ghost text: ' .. (qwen.options.ghost_text.enabled and engine or 'off'))

  local cmd = qwen.server_cmd(qwen.options)
  if vim.fn.executable(cmd[1]) == 1 then
    health.ok(('server command: %s (%s)'):format(table.concat(cmd, ' '), vim.fn.exepath(cmd[1])))
  else
    local install = require('qwen_lsp.install')
    health.error(('server command not found: %s'):format(cmd[1]), {
      ':QwenInstall installs it into ' .. install.venv() .. ' and starts it; it runs:',
      install.command(),
      'or set cmd (or python) in require("qwen_lsp").setup({ ... })',
    })
    return
  end

  local clients = vim.lsp.get_clients({ name = 'qwen_lsp' })
  if #clients > 0 then
    check_running(clients[1])
  else
    check_doctor(cmd, qwen.options.settings.model)
  end
end

return M
