// Start kinesis-mock (npm kinesis-local, a Scala.js build) on loopback only and print the port
// of its plain HTTP server. It binds every interface and has no host setting: net.Server's
// listen is wrapped to bind 127.0.0.1. It reads server.json (its TLS key) from the working
// directory, so it runs from its package folder. Nothing is persisted or loaded.
const net = require('net');
const path = require('path');

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function main() {
  const plain = Number(process.argv[2] || 0) || (await freePort());
  const secure = await freePort();
  const original = net.Server.prototype.listen;
  net.Server.prototype.listen = function listen(...args) {
    const server = this;
    const port = Number(args[0]);
    const cb = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
    return original.call(server, port, '127.0.0.1', () => {
      if (port === plain) console.log('PORT ' + plain);
      if (cb) cb();
    });
  };
  Object.assign(process.env, {
    KINESIS_MOCK_PLAIN_PORT: String(plain),
    KINESIS_MOCK_TLS_PORT: String(secure),
    LOAD_DATA_IF_EXISTS: 'false',
    SHOULD_PERSIST_DATA: 'false',
    CREATE_STREAM_DURATION: '0ms',
    REGISTER_STREAM_CONSUMER_DURATION: '300ms', // CREATING for a while, as on AWS
    SPLIT_SHARD_DURATION: '0ms',
    MERGE_SHARDS_DURATION: '0ms',
    LOG_LEVEL: 'WARN',
    ROOT_LOG_LEVEL: 'WARN',
  });
  const dir = path.dirname(require.resolve('kinesis-local/package.json'));
  process.chdir(dir);
  require(path.join(dir, 'main.js'));
}

process.on('SIGTERM', () => process.exit(0));
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
