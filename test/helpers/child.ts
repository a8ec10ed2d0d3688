// Runs a test file again in a child process, with this process's node flags (ts-node among them)
// and environment plus `env` (an undefined value removes the variable): for settings read once
// per process, such as VFFN_GEMM_KERNEL or VFFN_PACK_KIB.
import { SpawnSyncReturns, spawnSync } from 'node:child_process'

export function runSelf(file: string, env: Record<string, string | undefined>, timeoutMs = 300000): SpawnSyncReturns<string> {
  const e: NodeJS.ProcessEnv = { ...process.env }
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete e[k]
    else e[k] = v
  }
  return spawnSync(process.execPath, [...process.execArgv, file], { env: e, encoding: 'utf8', timeout: timeoutMs })
}
