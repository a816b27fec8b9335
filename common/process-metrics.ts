/**
 * prom-client's default process metrics for a registry, less the three gauges it names like counters
 * (`nodejs_active_handles_total`, `nodejs_active_requests_total`, `nodejs_active_resources_total`):
 * Prometheus reserves `_total` for counters and `promtool check metrics` refuses them. Their values are
 * the sums of the per-type gauges that stay (`nodejs_active_handles{type}` and the others).
 */
import { collectDefaultMetrics, type Registry } from 'prom-client';

const MISNAMED_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function collectProcessMetrics(registry: Registry, prefix = ''): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of MISNAMED_GAUGES) registry.removeSingleMetric(`${prefix}${name}`);
}
