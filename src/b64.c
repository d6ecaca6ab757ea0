#include "b64.h"

#include <errno.h>
#include <string.h>

/* Every 12-bit value to its two output characters: one load and one 2-byte
 * store per half of a 3-byte group, instead of four table look-ups and shifts.
 * Rows are 129 wide so each literal keeps its NUL and no compiler complains
 * about an unterminated initializer. */
/* clang-format off */
#define ROW(c)                                                                             \
	c "A" c "B" c "C" c "D" c "E" c "F" c "G" c "H" c "I" c "J" c "K" c "L" c "M" c "N" \
	c "O" c "P" c "Q" c "R" c "S" c "T" c "U" c "V" c "W" c "X" c "Y" c "Z" c "a" c "b" \
	c "c" c "d" c "e" c "f" c "g" c "h" c "i" c "j" c "k" c "l" c "m" c "n" c "o" c "p" \
	c "q" c "r" c "s" c "t" c "u" c "v" c "w" c "x" c "y" c "z" c "0" c "1" c "2" c "3" \
	c "4" c "5" c "6" c "7" c "8" c "9" c "+" c "/"

static const char pairs[64][129] = {
	ROW("A"), ROW("B"), ROW("C"), ROW("D"), ROW("E"), ROW("F"), ROW("G"), ROW("H"), ROW("I"),
	ROW("J"), ROW("K"), ROW("L"), ROW("M"), ROW("N"), ROW("O"), ROW("P"), ROW("Q"), ROW("R"),
	ROW("S"), ROW("T"), ROW("U"), ROW("V"), ROW("W"), ROW("X"), ROW("Y"), ROW("Z"), ROW("a"),
	ROW("b"), ROW("c"), ROW("d"), ROW("e"), ROW("f"), ROW("g"), ROW("h"), ROW("i"), ROW("j"),
	ROW("k"), ROW("l"), ROW("m"), ROW("n"), ROW("o"), ROW("p"), ROW("q"), ROW("r"), ROW("s"),
	ROW("t"), ROW("u"), ROW("v"), ROW("w"), ROW("x"), ROW("y"), ROW("z"), ROW("0"), ROW("1"),
	ROW("2"), ROW("3"), ROW("4"), ROW("5"), ROW("6"), ROW("7"), ROW("8"), ROW("9"), ROW("+"),
	ROW("/"),
};

#undef ROW
/* clang-format on */

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Character to value plus one, so that the zero default marks every byte that
 * is not in the alphabet. */
/* clang-format off */
static const uint8_t decode_table[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
	['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15,
	['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
	['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29,
	['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
	['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
	['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50,
	['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
	['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};
/* clang-format on */

static inline void put_pair(char *out, uint32_t v12)
{
	memcpy(out, &pairs[v12 >> 6][(v12 & 63) << 1], 2);
}

size_t b64_encode(const uint8_t *in, size_t len, char *out)
{
	size_t full = len - len % 3, i, o = 0;
	uint32_t v;

	for (i = 0; i < full; i += 3, o += 4) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		put_pair(out + o, v >> 12);
		put_pair(out + o + 2, v & 0xfff);
	}

	switch (len - full) {
	case 1:
		v = in[i];
		out[o] = alphabet[v >> 2];
		out[o + 1] = alphabet[(v & 3) << 4];
		out[o + 2] = '=';
		out[o + 3] = '=';
		o += 4;
		break;
	case 2:
		v = (uint32_t)in[i] << 8 | in[i + 1];
		out[o] = alphabet[v >> 10];
		out[o + 1] = alphabet[(v >> 4) & 63];
		out[o + 2] = alphabet[(v & 15) << 2];
		out[o + 3] = '=';
		o += 4;
		break;
	default:
		break;
	}
	return o;
}

/* Value of one character, or -1 if it is not in the alphabet. */
static inline int sextet(char c)
{
	return (int)decode_table[(unsigned char)c] - 1;
}

int b64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len)
{
	size_t full, rest, i, o = 0;
	int a, b, c, d;

	/* Padding, when present, must complete the last group: "QQ==", never "QQ=". */
	if (len > 0 && in[len - 1] == '=') {
		if (len % 4 != 0)
			return -EINVAL;
		len--;
		if (in[len - 1] == '=')
			len--;
	}
	rest = len % 4;
	if (rest == 1)
		return -EINVAL;
	full = len - rest;

	for (i = 0; i < full; i += 4, o += 3) {
		a = sextet(in[i]);
		b = sextet(in[i + 1]);
		c = sextet(in[i + 2]);
		d = sextet(in[i + 3]);
		if ((a | b | c | d) < 0)
			return -EINVAL;
		out[o] = (uint8_t)(a << 2 | b >> 4);
		out[o + 1] = (uint8_t)(b << 4 | c >> 2);
		out[o + 2] = (uint8_t)(c << 6 | d);
	}

	/* Non-zero leftover bits in the last character are accepted: RFC 4648
	 * allows it, and refusing an image we were already billed for over one
	 * stray bit would help nobody. */
	if (rest >= 2) {
		a = sextet(in[i]);
		b = sextet(in[i + 1]);
		c = rest == 3 ? sextet(in[i + 2]) : 0;
		if ((a | b | c) < 0)
			return -EINVAL;
		out[o++] = (uint8_t)(a << 2 | b >> 4);
		if (rest == 3)
			out[o++] = (uint8_t)(b << 4 | c >> 2);
	}

	*ret_len = o;
	return 0;
}

int b64_stream_decode(struct b64_stream *s, const char *in, size_t len, uint8_t *out,
		      size_t *ret_len)
{
	size_t i = 0, o = 0;
	int a, b, c, d;

	while (i < len) {
		if (s->n == 0 && !s->ended) {
			/* Whole groups straight from the input; a '=' or a bad
			 * character drops to the careful path below. */
			for (; len - i >= 4; i += 4, o += 3) {
				a = sextet(in[i]);
				b = sextet(in[i + 1]);
				c = sextet(in[i + 2]);
				d = sextet(in[i + 3]);
				if ((a | b | c | d) < 0)
					break;
				out[o] = (uint8_t)(a << 2 | b >> 4);
				out[o + 1] = (uint8_t)(b << 4 | c >> 2);
				out[o + 2] = (uint8_t)(c << 6 | d);
			}
			if (i == len)
				break;
		}
		if (s->ended)
			return -EINVAL;
		if (in[i] == '=') {
			/* Padding completes a group of 2 or 3 characters. */
			if (s->n < 2)
				return -EINVAL;
			s->pad++;
			s->group[s->n++] = 0;
		} else {
			a = sextet(in[i]);
			if (a < 0 || s->pad)
				return -EINVAL;
			s->group[s->n++] = (uint8_t)a;
		}
		i++;
		if (s->n == 4) {
			uint8_t bytes[3] = {
			    (uint8_t)(s->group[0] << 2 | s->group[1] >> 4),
			    (uint8_t)(s->group[1] << 4 | s->group[2] >> 2),
			    (uint8_t)(s->group[2] << 6 | s->group[3]),
			};
			memcpy(out + o, bytes, 3 - s->pad);
			o += 3 - s->pad;
			s->ended = s->pad > 0;
			s->n = 0;
		}
	}
	*ret_len = o;
	return 0;
}

int b64_stream_finish(struct b64_stream *s, uint8_t *out, size_t *ret_len)
{
	*ret_len = 0;
	if ((s->pad && !s->ended) || s->n == 1)
		return -EINVAL; /* "QQ=" or "Q" at the end */
	if (s->n >= 2)
		out[(*ret_len)++] = (uint8_t)(s->group[0] << 2 | s->group[1] >> 4);
	if (s->n == 3)
		out[(*ret_len)++] = (uint8_t)(s->group[1] << 4 | s->group[2] >> 2);
	s->n = 0;
	return 0;
}

void b64_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}
