export * from './errors.js';
export * from './digest.js';
export * from './duration.js';
export * from './file-names.js';
export * from './requirements.js';
export * from './cache-keys.js';
