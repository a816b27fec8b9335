/** Decorates the app with the one placement service of this process (the route and dispatch share it). */
import fp from 'fastify-plugin';
import { createPlacement, type Placement } from './index.js';

declare module 'fastify' {
  interface FastifyInstance {
    placement: Placement;
  }
}

export default fp(
  (app, _opts, done) => {
    app.decorate('placement', createPlacement(app.db, app.config));
    done();
  },
  { name: 'rgrid-placement', dependencies: ['rgrid-database'] },
);
