// Start kinesalite on loopback only (it has no host flag) and print the port it got.
const kinesalite = require('kinesalite');
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.listen(Number(process.argv[2] || 0), '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('PORT ' + server.address().port);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
