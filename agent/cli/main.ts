#!/usr/bin/env node
/**
 * The `rgrid-agent` entry: enables the compile cache before anything else is loaded, then the program
 * (agent/cli/program.ts). Kept apart so that the cache covers every module the program loads.
 */
import { enableCompileCache } from '../../common/compile-cache.js';

enableCompileCache();
await import('./program.js');
