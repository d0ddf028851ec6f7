#!/usr/bin/perl
# geoip_writer.pl - write a tiny GeoIP database for the tests with MaxMind's
# own writer (Debian: libmaxmind-db-writer-perl), in the GeoIP2-Country
# layout: {"country": {"iso_code": "DE"}}, optionally with
# "autonomous_system_number" as in GeoLite2-ASN.
#
#   geoip_writer.pl OUT.mmdb [CIDR=CC[:ASN] ...]
#
# Without mappings: 127.0.0.2/32=DE 127.0.0.3/32=KP 10.0.0.0/8=US:64500.
# IPv4 networks are also reachable as IPv4-mapped IPv6 (::ffff:a.b.c.d).
use strict;
use warnings;

use MaxMind::DB::Writer::Tree;

die "usage: $0 OUT.mmdb [CIDR=CC[:ASN] ...]\n" unless @ARGV >= 1;
my $out = shift @ARGV;
my @maps = @ARGV ? @ARGV : ('127.0.0.2/32=DE', '127.0.0.3/32=KP', '10.0.0.0/8=US:64500');

my %types = (
    country                  => 'map',
    iso_code                 => 'utf8_string',
    autonomous_system_number => 'uint32',
);

my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version    => 6,
    record_size   => 24,
    database_type => 'ZT-Test-Country-ASN',
    languages     => ['en'],
    description   => { en => 'ztproxy test GeoIP database' },
    # The tests map loopback and private addresses on purpose.
    remove_reserved_networks => 0,
    alias_ipv6_to_ipv4       => 1,
    map_key_type_callback    => sub { $types{ $_[0] } },
);

for my $m (@maps) {
    my ($net, $cc, $asn) = $m =~ m{^([0-9a-fA-F.:]+/\d+)=([A-Z]{2})(?::(\d+))?$}
        or die "$0: bad mapping \"$m\" (expected CIDR=CC or CIDR=CC:ASN)\n";
    my %rec = (country => { iso_code => $cc });
    $rec{autonomous_system_number} = $asn + 0 if defined $asn;
    $tree->insert_network($net, \%rec);
}

my $tmp = "$out.tmp.$$";
open(my $fh, '>:raw', $tmp) or die "$0: $tmp: $!\n";
$tree->write_tree($fh);
close($fh) or die "$0: $tmp: $!\n";
rename($tmp, $out) or die "$0: rename to $out: $!\n";
