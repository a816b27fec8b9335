// The published contracts against a real grid (control plane on a loopback port, a real agent):
// - a client generated from GET /docs/json (openapi-typescript types + openapi-fetch, nothing of the
//   project's own code) uploads blobs, records a manifest, submits, waits and downloads the outputs;
// - both Prometheus scrapes (the control plane's /metrics, the agent's) pass `promtool check metrics`.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import openapiTS, { astToString } from 'openapi-typescript';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { nonceScript, ROOT, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { agentMetrics } from '../support/processes.js';
import { useGrid } from './grid.js';

/** The parts of openapi-client/flow.ts this test uses (that file compiles only against the generated types). */
interface FlowInput {
  baseUrl: string;
  token: string;
  runtime: string;
  script: Uint8Array;
  input: { name: string; bytes: Uint8Array };
}
interface FlowResult {
  uploaded: number;
  inputSha256: string;
  execution: { status: string; outputs: unknown[] } & Record<string, unknown>;
  logs: { stdout: string; stderr: string } | undefined;
  outputs: Record<string, Buffer>;
}

const grid = useGrid();
const CLIENT_DIR = join(ROOT, 'test', 'e2e', 'openapi-client');
const GENERATED = join(CLIENT_DIR, 'generated');
afterAll(() => rmSync(GENERATED, { recursive: true, force: true }));

/** openapi-typescript's documented recipe for raw bytes: `format: binary` is a Blob, not a string. */
async function generateTypes(doc: unknown): Promise<string> {
  const ast = await openapiTS(doc as never, {
    transform: (schema) => (schema.format === 'binary' ? ts.factory.createTypeReferenceNode('Blob') : undefined),
  });
  return astToString(ast);
}

/** Type-checks `files` with the project's compiler options; the diagnostics, one per line. */
function typeCheck(files: string[]): string[] {
  const parsed = ts.getParsedCommandLineOfConfigFile(join(ROOT, 'tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  });
  const program = ts.createProgram(files, { ...parsed!.options, noEmit: true });
  return ts.getPreEmitDiagnostics(program).map((d) => `${d.file?.fileName ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
}


/** `promtool check metrics` on a scrape: its exit status and every complaint. */
function promtool(scrape: string): { status: number | null; complaints: string } {
  const res = spawnSync('promtool', ['check', 'metrics'], { input: scrape, encoding: 'utf8' });
  if (res.error) throw new Error(`promtool could not run (${res.error.message}): scripts/setup-host.sh installs it with Debian's prometheus package`);
  return { status: res.status, complaints: `${res.stdout}${res.stderr}`.trim() };
}

describe('published contracts on a real grid', () => {
  const account = uniqueAccount('openapi');
  let agent: AgentProcess;

  it('a client generated from /docs/json uploads, records a manifest, submits, waits and downloads the outputs', async () => {
    agent = await grid.agent(account, 'openapi-1');
    const doc: unknown = await (await fetch(`${grid.url()}/docs/json`)).json();
    mkdirSync(GENERATED, { recursive: true });
    writeFileSync(join(GENERATED, 'api.d.ts'), await generateTypes(doc));
    // Types that the client really depends on: a wrong body is a compile error, not `any`.
    writeFileSync(join(GENERATED, 'misuse.ts'), [
      "import createClient from 'openapi-fetch';",
      "import type { paths } from './api.js';",
      "const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:1' });",
      "void client.POST('/v1/executions/submit', { body: { runtime: 3, script_sha256: 'x' } });",
      "void client.PUT('/v1/blobs/{sha256}', { params: { path: { sha: 'x' } }, body: new Blob([]) });",
      '',
    ].join('\n'));
    expect(typeCheck([join(CLIENT_DIR, 'flow.ts')])).toEqual([]);
    const misuse = typeCheck([join(GENERATED, 'misuse.ts')]);
    expect(misuse.some((d) => d.includes("'number' is not assignable to type 'string'"))).toBe(true);
    expect(misuse.some((d) => d.includes("'sha'"))).toBe(true);

    // Imported by path: the main type check never sees flow.ts, whose types exist only from this test on.
    const { runFlow } = (await import(join(CLIENT_DIR, 'flow.ts'))) as { runFlow: (input: FlowInput) => Promise<FlowResult> };
    const script = Buffer.from(nonceScript([
      'import pathlib',
      "text = pathlib.Path('/work/inputs/words.txt').read_text()",
      "pathlib.Path('/work/outputs/shout').mkdir()",
      "pathlib.Path('/work/outputs/shout/words.txt').write_text(text.upper())",
      "print('shouted', len(text), 'characters')",
    ].join('\n')));
    const words = Buffer.from(`rgrid through its published contract ${Date.now()}\n`);
    const result = await runFlow({ baseUrl: grid.url(), token: await grid.clientToken(account), runtime: 'python3.11', script, input: { name: 'words.txt', bytes: words } });
    expect(result.uploaded).toBe(2);
    expect(result.execution).toMatchObject({ status: 'succeeded', exit_code: 0, input_sha256: result.inputSha256, worker_id: 'openapi-1' });
    expect(result.logs?.stdout).toBe(`shouted ${words.length} characters\n`);
    expect(Object.keys(result.outputs)).toEqual(['shout/words.txt']);
    expect(result.outputs['shout/words.txt']!.toString()).toBe(words.toString().toUpperCase());

    // Run again: the client's HEAD finds both blobs stored and uploads nothing.
    const again = await runFlow({ baseUrl: grid.url(), token: await grid.clientToken(account), runtime: 'python3.11', script, input: { name: 'words.txt', bytes: words } });
    expect(again.uploaded).toBe(0);
    expect(again.execution.status).toBe('succeeded');
  });

  it("both scrapes, the control plane's and the agent's, pass promtool check metrics", async () => {
    // After the run above, the counters and histograms have samples, the sync counters included.
    const control = await (await fetch(`${grid.url()}/metrics`)).text();
    const agentScrape = await agentMetrics(agent.socket);
    for (const [name, scrape] of [['control plane', control], ['agent', agentScrape]] as const) {
      expect(scrape.length, name).toBeGreaterThan(1000);
      expect(promtool(scrape), name).toEqual({ status: 0, complaints: '' });
    }
    // The renamed counters are counters, with samples; the misnamed ones are gone.
    expect(agentScrape).toContain('# TYPE rgrid_agent_outbox_ops_enqueued_total counter');
    expect(agentScrape).toMatch(/^rgrid_agent_sync_ops_sent_total [1-9]/m);
    expect(agentScrape).toMatch(/^rgrid_agent_sync_snapshots_sent_total [1-9]/m);
    expect(control).toMatch(/^rgrid_control_sync_snapshots_total [1-9]/m);
    for (const old of ['rgrid_agent_outbox_ops_enqueued ', 'rgrid_agent_sync_sent', 'nodejs_active_handles_total']) {
      expect(agentScrape + control).not.toContain(old);
    }
  });

  it('promtool refuses what the old scrapes had: a gauge named like a counter', () => {
    const old = '# HELP rgrid_agent_nodejs_active_handles_total Number of active handles.\n# TYPE rgrid_agent_nodejs_active_handles_total gauge\nrgrid_agent_nodejs_active_handles_total 4\n';
    const res = promtool(old);
    expect(res.status).not.toBe(0);
    expect(res.complaints).toContain('non-counter metrics should not have "_total" suffix');
  });
});
