// Placeholder until the control plane lands: provides nothing yet.
export default function setup(): void {}
