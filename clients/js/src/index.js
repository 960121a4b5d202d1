'use strict';
/** millpond's Node.js client: see ../README.md. */

const { Admin } = require('./admin');
const { Consumer } = require('./consumer');
const { Producer } = require('./producer');
const { Cluster } = require('./cluster');
const { MillpondError } = require('./errors');
const recordBatch = require('./recordBatch');
const { crc32c } = require('./crc32c');
const { murmur2, partitionForKey, StickyPartitioner } = require('./partitioner');

module.exports = {
  Admin, Consumer, Producer, Cluster, MillpondError,
  recordBatch, crc32c, murmur2, partitionForKey, StickyPartitioner,
};
