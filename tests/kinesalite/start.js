// Start kinesalite on loopback only (it has no host flag) and print the port it got.
//
//   node start.js [PORT] [stock]
//
// One emulator bug is mended first, unless "stock" is asked for (what users run): GetShardIterator
// AT_TIMESTAMP with no record at or after the time never answers (its lazy stream's head() is
// never called), where Kinesis returns an iterator at the shard's end. Such a request is answered
// as LATEST, which is that iterator.
const stock = process.argv[3] === 'stock';
const path = require.resolve('kinesalite/actions/getShardIterator');
const db = require('kinesalite/db');
const original = require(path);
if (!stock) require.cache[path].exports = function getShardIterator(store, data, cb) {
  if (data.ShardIteratorType !== 'AT_TIMESTAMP' || data.Timestamp == null) {
    return original(store, data, cb);
  }
  let shardIx;
  try {
    shardIx = db.resolveShardId(data.ShardId).shardIx;
  } catch (e) {
    return original(store, data, cb);
  }
  let found = false;
  let answered = false;
  const finish = () => {
    if (answered) return;
    answered = true;
    if (found || data.Timestamp * 1000 > Date.now()) return original(store, data, cb);
    return original(store, Object.assign({}, data, { ShardIteratorType: 'LATEST', Timestamp: undefined }), cb);
  };
  let stream;
  try {
    stream = store.getStreamDb(data.StreamName).createReadStream({
      gt: db.shardIxToHex(shardIx),
      lt: db.shardIxToHex(shardIx + 1),
    });
  } catch (e) {
    return original(store, data, cb);
  }
  stream.on('data', (item) => {
    if (item.value.ApproximateArrivalTimestamp >= data.Timestamp) {
      found = true;
      stream.destroy();
      finish();
    }
  });
  stream.on('error', finish);
  stream.on('end', finish);
  stream.on('close', finish);
};
const kinesalite = require('kinesalite');
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.listen(Number(process.argv[2] || 0), '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('PORT ' + server.address().port);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
