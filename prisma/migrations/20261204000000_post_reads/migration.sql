-- CreateTable
CREATE TABLE "post_reads" (
    "id" SERIAL NOT NULL,
    "post_id" INTEGER NOT NULL,
    "read_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "post_reads_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "post_read_counts" (
    "day" DATE NOT NULL,
    "post_id" INTEGER NOT NULL,
    "reads" INTEGER NOT NULL,

    CONSTRAINT "post_read_counts_pkey" PRIMARY KEY ("day","post_id")
);

-- CreateIndex
CREATE INDEX "post_reads_read_at_idx" ON "post_reads"("read_at");
