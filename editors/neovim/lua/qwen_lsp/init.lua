-- qwen-lsp for Neovim 0.11+: starts the server with vim.lsp.config/vim.lsp.enable, shows its
-- inline completions as ghost text and adds :QwenExplain, :QwenFix and :QwenStatus.
local M = {}

local NAME = 'qwen_lsp'

-- Every option with its default. `settings` go to the server as they are (see the server's
-- qwen_lsp/config.py for each one): as initializationOptions, and again on every change.
M.defaults = {
  -- How to start the server: a `qwen-lsp` on PATH, or e.g. { '/path/python', '-m', 'qwen_lsp' }.
  cmd = { 'qwen-lsp' },
  filetypes = { 'python' },
  root_markers = { 'pyproject.toml', 'setup.py', 'setup.cfg', '.git' },
  settings = {},
  ghost_text = {
    enabled = true,
    -- 'auto': Neovim's own vim.lsp.inline_completion where it exists (0.12+), else 'extmark',
    -- this plugin's small fallback for 0.11.
    engine = 'auto',
    -- Only for the fallback: wait this long after a keystroke before asking (Neovim's own
    -- implementation waits 200 ms).
    debounce_ms = 200,
  },
  keys = {
    -- Accepts the ghost text. While the completion popup is open the key is left to the popup,
    -- and without ghost text it does what it did before (e.g. a plain <Tab>).
    accept = '<Tab>',
    -- Other suggestions (native engine only); false to leave the keys alone.
    next = '<M-]>',
    prev = '<M-[>',
  },
  explain = {
    -- Largest size of the explanation window, as a fraction of the editor.
    max_width = 0.6,
    max_height = 0.6,
  },
}

M.options = vim.deepcopy(M.defaults)

--- The qwen-lsp client attached to `bufnr` (default: current buffer), if any.
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = NAME })[1]
end

function M.native_ghost_text()
  local engine = M.options.ghost_text.engine
  if engine == 'native' then
    return true
  end
  return engine == 'auto' and vim.lsp.inline_completion ~= nil
end

--- Accept the visible ghost text; false when there is none.
function M.accept()
  if M.native_ghost_text() then
    return vim.lsp.inline_completion.get()
  end
  return require('qwen_lsp.ghost').accept()
end

-- The key's mapping before ours, so that without ghost text it keeps doing what it did.
local function fallback_for(key, bufnr)
  local previous = vim.api.nvim_buf_call(bufnr, function()
    return vim.fn.maparg(key, 'i', false, true)
  end)
  if vim.tbl_isempty(previous) or previous.desc == 'qwen-lsp: accept' then
    return function()
      return key
    end
  end
  return function()
    if previous.callback then
      local result = previous.callback()
      return previous.expr == 1 and result or ''
    end
    local rhs = previous.expr == 1 and vim.api.nvim_eval(previous.rhs) or previous.rhs
    vim.api.nvim_feedkeys(vim.keycode(rhs), previous.noremap == 1 and 'n' or 'm', false)
    return ''
  end
end

local function map_keys(bufnr)
  local keys = M.options.keys
  if keys.accept then
    local fallback = fallback_for(keys.accept, bufnr)
    vim.keymap.set('i', keys.accept, function()
      -- The completion popup owns the key while it is open: no fight over <Tab>.
      if vim.fn.pumvisible() == 0 and M.accept() then
        return ''
      end
      return fallback()
    end, { buffer = bufnr, expr = true, desc = 'qwen-lsp: accept' })
  end
  if M.native_ghost_text() then
    for key, count in pairs({ [keys.next or ''] = 1, [keys.prev or ''] = -1 }) do
      if key ~= '' then
        vim.keymap.set('i', key, function()
          vim.lsp.inline_completion.select({ count = count })
        end, { buffer = bufnr, desc = 'qwen-lsp: other suggestion' })
      end
    end
  end
end

local function on_attach(client, bufnr)
  if M.options.ghost_text.enabled and client:supports_method('textDocument/inlineCompletion') then
    if M.native_ghost_text() then
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    else
      require('qwen_lsp.ghost').attach(client, bufnr, M.options.ghost_text)
    end
    map_keys(bufnr)
  end
end

--- Send new settings to the running servers (and to the ones started later).
function M.configure(settings)
  M.options.settings = vim.tbl_deep_extend('force', M.options.settings, settings)
  vim.lsp.config(NAME, { init_options = { qwen = M.options.settings }, settings = { qwen = M.options.settings } })
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    client.settings = { qwen = M.options.settings }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
end

local function status()
  local client = M.client()
  if not client then
    vim.notify('qwen-lsp is not attached to this buffer', vim.log.levels.WARN)
    return
  end
  client:request('qwen/status', {}, function(err, result)
    if err then
      vim.notify('qwen-lsp: ' .. err.message, vim.log.levels.ERROR)
      return
    end
    local line = ('qwen-lsp: %s, %s'):format(result.state or '?', result.model or 'no model')
    local last = result.recent and result.recent[#result.recent]
    if last and last.generation_seconds and last.generation_seconds > 0 then
      line = line .. (', %.1f tokens/s'):format(last.generated_tokens / last.generation_seconds)
    end
    vim.notify(line)
  end)
end

local function create_commands()
  vim.api.nvim_create_user_command('QwenExplain', function(args)
    require('qwen_lsp.explain').explain(0, args.line1, args.line2)
  end, { range = true, desc = 'Explain the selected lines with Qwen, streaming into a float' })
  vim.api.nvim_create_user_command('QwenFix', function()
    vim.lsp.buf.code_action({
      filter = function(action)
        return vim.startswith(action.title, 'Fix with Qwen')
      end,
    })
  end, { desc = 'Fix the diagnostic under the cursor with Qwen' })
  vim.api.nvim_create_user_command('QwenStatus', status, { desc = 'Show the model and its speed' })
end

function M.setup(opts)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if vim.fn.has('nvim-0.11') == 0 then
    vim.notify('qwen-lsp needs Neovim 0.11 or newer', vim.log.levels.ERROR)
    return
  end
  local options = M.options
  vim.lsp.config(NAME, {
    cmd = options.cmd,
    filetypes = options.filetypes,
    root_markers = options.root_markers,
    init_options = { qwen = options.settings },
    settings = { qwen = options.settings },
    on_attach = on_attach,
  })
  vim.lsp.enable(NAME)
  create_commands()
end

return M
