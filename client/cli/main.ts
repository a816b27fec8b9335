#!/usr/bin/env node
/**
 * The `rgrid` entry: enables the compile cache before anything else is loaded, then the program
 * (client/cli/program.ts). Kept apart so that the cache covers every module the program loads.
 */
import { enableCompileCache } from '../../common/compile-cache.js';

enableCompileCache();
await import('./program.js');
