// Confluent's own Avro serdes (@confluentinc/schemaregistry) as a line filter, for test_interop.py.
//   node serde.js decode URL TOPIC   stdin: hex wire-format values    stdout: JSON records
//   node serde.js encode URL TOPIC   stdin: JSON records              stdout: hex wire-format values
// JSON records are in fraudstream consume's form: decimals as exact strings, timestamp-millis as
// ISO-8601 UTC with milliseconds, bytes as hex. Encoding uses the subject's latest version (no registration).
'use strict';
const readline = require('node:readline');
const {
  SchemaRegistryClient, AvroSerializer, AvroDeserializer, SerdeType,
} = require('@confluentinc/schemaregistry');

function fromAvro(schema, value) {
  if (value === null || value === undefined) return null;
  if (Array.isArray(schema)) {
    const branches = schema.filter((b) => b !== 'null');
    return fromAvro(branches.length === 1 ? branches[0] : branches[0], value);
  }
  if (typeof schema === 'string') return Buffer.isBuffer(value) ? value.toString('hex') : value;
  if (schema.logicalType === 'decimal') return decimalString(value, schema.scale || 0);
  if (schema.logicalType === 'timestamp-millis') return new Date(Number(value)).toISOString();
  switch (schema.type) {
    case 'record': return Object.fromEntries(schema.fields.map((f) => [f.name, fromAvro(f.type, value[f.name])]));
    case 'array': return value.map((v) => fromAvro(schema.items, v));
    case 'map': return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromAvro(schema.values, v)]));
    default: return typeof schema.type === 'object' ? fromAvro(schema.type, value) : fromAvro(schema.type, value);
  }
}

function toAvro(schema, value) {
  if (value === null || value === undefined) return null;
  if (Array.isArray(schema)) return toAvro(schema.find((b) => b !== 'null'), value);
  if (typeof schema === 'string') return schema === 'bytes' ? Buffer.from(value, 'hex') : value;
  if (schema.logicalType === 'decimal') return decimalBytes(value, schema.scale || 0);
  if (schema.logicalType === 'timestamp-millis') return Date.parse(value);
  switch (schema.type) {
    case 'record': return Object.fromEntries(schema.fields.map((f) => [f.name, toAvro(f.type, value[f.name])]));
    case 'array': return value.map((v) => toAvro(schema.items, v));
    case 'map': return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toAvro(schema.values, v)]));
    default: return toAvro(schema.type, value);
  }
}

function decimalString(buf, scale) {  // big-endian two's complement unscaled value
  let n = buf.length ? BigInt.asIntN(buf.length * 8, BigInt('0x' + buf.toString('hex'))) : 0n;
  const negative = n < 0n;
  if (negative) n = -n;
  const digits = n.toString().padStart(scale + 1, '0');
  const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return negative ? `-${text}` : text;
}

function decimalBytes(text, scale) {
  const [whole, frac = ''] = String(text).replace('-', '').split('.');
  let n = BigInt(whole + frac.padEnd(scale, '0').slice(0, scale));
  if (String(text).startsWith('-')) n = -n;
  let bytes = 1;
  while (n >= 1n << BigInt(bytes * 8 - 1) || n < -(1n << BigInt(bytes * 8 - 1))) bytes += 1;
  const hex = BigInt.asUintN(bytes * 8, n).toString(16).padStart(bytes * 2, '0');
  return Buffer.from(hex, 'hex');
}

async function main() {
  const [mode, url, topic] = process.argv.slice(2);
  const client = new SchemaRegistryClient({ baseURLs: [url] });
  const latest = JSON.parse((await client.getLatestSchemaMetadata(`${topic}-value`)).schema);
  const serializer = new AvroSerializer(client, SerdeType.VALUE, { useLatestVersion: true, autoRegisterSchemas: false });
  const deserializer = new AvroDeserializer(client, SerdeType.VALUE, {});
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    if (mode === 'decode') {
      const payload = Buffer.from(line.trim(), 'hex');
      const writer = JSON.parse((await client.getBySubjectAndId(`${topic}-value`, payload.readInt32BE(1))).schema);
      process.stdout.write(JSON.stringify(fromAvro(writer, await deserializer.deserialize(topic, payload))) + '\n');
    } else {
      const bytes = await serializer.serialize(topic, toAvro(latest, JSON.parse(line)));
      process.stdout.write(bytes.toString('hex') + '\n');
    }
  }
}

main().catch((err) => { process.stderr.write(`${err.stack || err}\n`); process.exit(1); });
