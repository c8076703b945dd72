// A loopback front for the real KCL: its Kinesis client always speaks HTTP/2, over http:// that
// is h2c with prior knowledge, which kinesalite does not speak. Each request is forwarded to
// kinesalite over HTTP/1.1 and its answer returned. Usage: node h2c_front.js UPSTREAM_PORT
//
// One emulator gap is mended on the way back: at the end of a closed shard kinesalite sends no
// ChildShards, and the KCL (2.3+) then never reaches SHARD_END. The front remembers which shard
// each iterator reads (from GetShardIterator's request and each GetRecords' next iterator) and
// adds the shard's children, from ListShards, to the last GetRecords answer, as Kinesis does.
const http = require('http');
const http2 = require('http2');

const upstream = Number(process.argv[2]);
const iterators = new Map(); // iterator -> { StreamName, ShardId }

function call(target, headers, body) {
  return new Promise((resolve, reject) => {
    const out = Object.assign({}, headers, {
      'x-amz-target': 'Kinesis_20131202.' + target,
      'content-type': 'application/x-amz-json-1.1',
      'content-length': Buffer.byteLength(body),
    });
    delete out['x-amz-content-sha256'];
    const req = http.request({ host: '127.0.0.1', port: upstream, method: 'POST', path: '/', headers: out }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString() || '{}')));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function childrenOf(headers, streamName, shardId) {
  const shards = [];
  let token;
  do {
    const page = await call('ListShards', headers, JSON.stringify(token ? { NextToken: token } : { StreamName: streamName }));
    shards.push(...(page.Shards || []));
    token = page.NextToken;
  } while (token);
  return shards
    .filter((s) => s.ParentShardId === shardId || s.AdjacentParentShardId === shardId)
    .map((s) => ({
      ShardId: s.ShardId,
      ParentShards: [s.ParentShardId, s.AdjacentParentShardId].filter(Boolean),
      HashKeyRange: s.HashKeyRange,
    }));
}

async function mend(target, request, body, headers) {
  let asked, answer;
  try {
    asked = JSON.parse(request.toString() || '{}');
    answer = JSON.parse(body.toString() || '{}');
  } catch (e) {
    return body;
  }
  if (target.endsWith('.GetShardIterator') && answer.ShardIterator) {
    iterators.set(answer.ShardIterator, { StreamName: asked.StreamName, ShardId: asked.ShardId });
    return body;
  }
  if (!target.endsWith('.GetRecords')) return body;
  const where = iterators.get(asked.ShardIterator);
  iterators.delete(asked.ShardIterator);
  if (!where) return body;
  if (answer.NextShardIterator) {
    iterators.set(answer.NextShardIterator, where);
    return body;
  }
  if (answer.ChildShards || answer.__type) return body;
  answer.ChildShards = await childrenOf(headers, where.StreamName, where.ShardId);
  return Buffer.from(JSON.stringify(answer));
}

const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    const body = Buffer.concat(chunks);
    const out = {};
    for (const [k, v] of Object.entries(headers)) {
      if (!k.startsWith(':')) out[k] = v;
    }
    out['content-length'] = body.length;
    const target = String(headers['x-amz-target'] || '');
    const req = http.request(
      { host: '127.0.0.1', port: upstream, method: headers[':method'], path: headers[':path'], headers: out },
      (res) => {
        const back = {};
        for (const [k, v] of Object.entries(res.headers)) {
          if (!['connection', 'transfer-encoding', 'keep-alive', 'content-length'].includes(k)) back[k] = v;
        }
        back[':status'] = res.statusCode;
        const parts = [];
        res.on('data', (c) => parts.push(c));
        res.on('end', async () => {
          let answer = Buffer.concat(parts);
          if (res.statusCode === 200) {
            try {
              answer = await mend(target, body, answer, out);
            } catch (e) {}
          }
          back['content-length'] = answer.length;
          try { stream.respond(back); stream.end(answer); } catch (e) {}
        });
      },
    );
    req.on('error', () => { try { stream.respond({ ':status': 502 }); stream.end(); } catch (e) {} });
    req.end(body);
  });
  stream.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
process.on('SIGTERM', () => process.exit(0));
