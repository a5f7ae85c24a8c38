-- Neovim's right-click menu as a user sees it: a Neovim with its terminal UI runs in a terminal
-- buffer of this headless one, which sends it real mouse events (SGR escape sequences), reads its
-- screen as text and saves the screens: the PopUp menu with "Explain with Qwen", and the float
-- the explanation streamed into after clicking that entry. Run with
-- `nvim --headless -u NONE -i NONE -c 'luafile nvim_tui.lua'`; inputs in QWEN_E2E_* variables,
-- result JSON in QWEN_E2E_RESULT, screens in QWEN_E2E_SHOTS.
local env = vim.env
local api = vim.api
local result = { screens = {} }

local function screen()
  return api.nvim_buf_get_lines(0, 0, -1, false)
end

local function save(name)
  local lines = screen()
  result.screens[name] = table.concat(lines, '\n')
  vim.fn.writefile(lines, env.QWEN_E2E_SHOTS .. '/' .. name .. '.txt')
end

-- The 1-based screen row and column where `text` is shown.
local function find(text)
  for row, line in ipairs(screen()) do
    local col = line:find(text, 1, true)
    if col then
      return row, vim.fn.strdisplaywidth(line:sub(1, col - 1)) + 1
    end
  end
end

local function wait_for(what, condition, timeout_ms)
  local co = assert(coroutine.running())
  local deadline = vim.uv.now() + timeout_ms
  local function poll()
    local a, b = condition()
    if a or vim.uv.now() > deadline then
      coroutine.resume(co, a, b)
    else
      vim.defer_fn(poll, 100)
    end
  end
  vim.defer_fn(poll, 100)
  local a, b = coroutine.yield()
  if not a then
    error('timed out waiting for ' .. what, 0)
  end
  return a, b
end

local function mouse(chan, button, row, col)
  vim.fn.chansend(chan, ('\27[<%d;%d;%dM'):format(button, col, row)) -- press
  vim.fn.chansend(chan, ('\27[<%d;%d;%dm'):format(button, col, row)) -- release
end

local function main()
  vim.o.columns, vim.o.lines = 100, 30
  local inner = { env.QWEN_E2E_NVIM, '-u', env.QWEN_E2E_INIT, '-i', 'NONE', env.QWEN_E2E_FILE }
  local chan = vim.fn.jobstart(inner, { term = true })
  wait_for('the server to attach', function()
    return find('[qwen attached]')
  end, 120000)
  local row, col = wait_for('the function body', function()
    return find(env.QWEN_E2E_CLICK)
  end, 5000)
  mouse(chan, 2, row, col + 4) -- right button
  local entry_row, entry_col = wait_for('the menu', function()
    return find('Explain with Qwen')
  end, 10000)
  save('neovim-right-click-menu')
  mouse(chan, 0, entry_row, entry_col + 2) -- left button, on the entry
  wait_for('the explanation', function()
    return find('Qwen: explain') and find('done (q closes)')
  end, 600000)
  save('neovim-right-click-explain')
  vim.fn.chansend(chan, '\27:qa!\r')
end

coroutine.wrap(function()
  local ok, err = pcall(main)
  result.error = not ok and tostring(err) or nil
  if not ok then
    pcall(save, 'neovim-failure')
  end
  vim.fn.writefile({ vim.json.encode(result) }, env.QWEN_E2E_RESULT)
  vim.cmd('qall!')
end)()
